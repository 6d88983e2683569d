"""Vectorising a per-member function over a pack's member axis, for XLA and for convnets.

`vectorize(fn, stacked)` is `tf.vectorized_map(fn, stacked)` with two differences that
the packed engine needs:

* Under XLA, `tf.vectorized_map` wraps the vectorised graph in an inner tf.function, and
  XLA then treats every tensor the inner function captures (the pack's weights, the batch
  indices, the data set) as a compile-time constant: the step recompiles on every call
  (measured: "Must be const args" names the weight variables; one compilation per
  call). We call the vectorising converter (`pfor`) directly instead, in the caller's
  graph, so XLA sees ordinary inputs and compiles once per shape.

* A convolution whose kernel differs per member has no batched converter in TF
  (`vectorized_map` falls back to a while loop over members, and under XLA it does not
  compile at all). While `vectorize` converts, Conv2D with a per-member kernel becomes
  one grouped convolution over the pack: members on the channel axis,
  feature_group_count = members (K independent convolutions as one op, forward and
  backward). Measured on 2 cores for 30 members, B = 32, 8x8x8 -> 16 channels, forward
  and kernel gradient: 40.8 ms with the while loop, 5.5 ms grouped (BENCHMARKS.md).

Both reach into TF's parallel_for internals (`_pfor_impl`, the converter registry); when
they are missing (another TF version) `vectorize` falls back to `tf.vectorized_map`, and
tests/test_engine_xla.py (compilations per shape) and tests/test_packed_conv.py (grouped
vs per member) say so.
"""

import contextlib

import tensorflow as tf

try:  # private: see the module docstring
    from tensorflow.python.ops.parallel_for import control_flow_ops as _pfor_ops
    from tensorflow.python.ops.parallel_for import pfor as _pfor_lib

    _PFOR_IMPL = getattr(_pfor_ops, "_pfor_impl", None)
    _REGISTRY = getattr(_pfor_lib, "_pfor_converter_registry", None)
except ImportError:  # pragma: no cover - another TF layout
    _PFOR_IMPL, _REGISTRY = None, None


def vectorize(fn, stacked):
    """fn over the leading (member) axis of every tensor in `stacked`, stacked again."""
    members = tf.nest.flatten(stacked)[0].shape[0]
    if _PFOR_IMPL is None or _REGISTRY is None or members is None:
        return tf.vectorized_map(fn, stacked)

    def loop_fn(i):
        return fn(tf.nest.map_structure(lambda t: tf.gather(t, i), stacked))

    with _grouped_convolutions():
        return _PFOR_IMPL(loop_fn, members, fallback_to_while_loop=True,
                          parallel_iterations=None, warn=False)


@contextlib.contextmanager
def _grouped_convolutions():
    """Swaps in the grouped Conv2D converter while `vectorize` converts, then restores."""
    original = _REGISTRY.get("Conv2D")
    if original is None:
        yield
        return

    def convert(pfor_input):
        if (not pfor_input.input(1)[1]  # one kernel for every member: TF's own converter
                or pfor_input.get_attr("data_format") not in (b"NHWC", "NHWC")):
            return original(pfor_input)
        pfor_input.stack_inputs(stack_indices=[0])
        x = pfor_input.stacked_input(0)  # [K, B, H, W, C]
        kernel = pfor_input.stacked_input(1)  # [K, kh, kw, C, O]
        return _pfor_lib.wrap(grouped_conv2d(
            x, kernel, strides=pfor_input.get_attr("strides"),
            padding=pfor_input.get_attr("padding"),
            explicit_paddings=pfor_input.get_attr("explicit_paddings"),
            dilations=pfor_input.get_attr("dilations")), True)

    _REGISTRY["Conv2D"] = convert
    try:
        yield
    finally:
        _REGISTRY["Conv2D"] = original


def grouped_conv2d(x, kernel, strides=(1, 1, 1, 1), padding="SAME", explicit_paddings=(),
                   dilations=(1, 1, 1, 1)):
    """K convolutions, member k's input x[k] with its kernel kernel[k], as one grouped op.

    Args:
      x: [K, B, H, W, C].
      kernel: [K, kh, kw, C, O].
      strides, padding, explicit_paddings, dilations: as tf.raw_ops.Conv2D (NHWC).

    Returns:
      [K, B, H', W', O].
    """
    if isinstance(padding, bytes):
        padding = padding.decode()
    shape = tf.shape(x)
    k_shape = tf.shape(kernel)
    members, channels = shape[0], shape[4]
    # Members onto the channel axis: [B, H, W, K*C] and [kh, kw, C, K*O]. A conv whose
    # input has K times the kernel's input channels is grouped: group k sees input
    # channels k*C..(k+1)*C and produces output channels k*O..(k+1)*O.
    packed_x = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]),
                          tf.stack([shape[1], shape[2], shape[3], members * channels]))
    packed_kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]),
                               tf.stack([k_shape[1], k_shape[2], k_shape[3],
                                         members * k_shape[4]]))
    y = tf.raw_ops.Conv2D(input=packed_x, filter=packed_kernel, strides=list(strides),
                          padding=padding, explicit_paddings=list(explicit_paddings),
                          data_format="NHWC", dilations=list(dilations))
    y_shape = tf.shape(y)
    y = tf.reshape(y, tf.stack([y_shape[0], y_shape[1], y_shape[2], members, k_shape[4]]))
    return tf.transpose(y, [3, 0, 1, 2, 4])

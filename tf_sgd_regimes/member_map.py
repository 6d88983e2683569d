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
  Where the grouped form is slow or missing the converter picks another: under XLA on a
  CPU (XLA's CPU grouped convolution is ~500x slower) one batched matmul per kernel
  offset (`shifted_conv2d`); without XLA and without oneDNN (TF's CPU kernels have no
  grouped gradient there) pfor's loop over members.

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

try:  # private: whether TensorFlow's oneDNN kernels are on (TF_ENABLE_ONEDNN_OPTS)
    from tensorflow.python.util import _pywrap_util_port

    def onednn_enabled() -> bool:
        return bool(_pywrap_util_port.IsMklEnabled())
except ImportError:  # pragma: no cover - another TF layout: assume TF's usual default
    def onednn_enabled() -> bool:
        return True

_warned_no_onednn = []

try:  # private: whether the graph being built is compiled by XLA (jit_compile=True)
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
except ImportError:  # pragma: no cover - another TF layout: guard every graph
    GraphOrParentsInXlaContext = None


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
        xla_on_cpu = _in_xla_context() and _xla_on_cpu()
        if xla_on_cpu:
            pfor_input.stack_inputs(stack_indices=[0])
        if xla_on_cpu and _static(pfor_input.stacked_input(0), pfor_input.stacked_input(1)):
            # XLA's CPU grouped convolution is ~500x slower than the ops it replaces
            # (BENCHMARKS.md): there, the pack's convolution is one batched matmul per
            # kernel offset (shifted_conv2d), which XLA fuses with the slicing.
            return _pfor_lib.wrap(shifted_conv2d(
                pfor_input.stacked_input(0), pfor_input.stacked_input(1),
                strides=pfor_input.get_attr("strides"),
                padding=pfor_input.get_attr("padding"),
                explicit_paddings=pfor_input.get_attr("explicit_paddings"),
                dilations=pfor_input.get_attr("dilations")), True)
        if not _in_xla_context() and not onednn_enabled():
            # Without oneDNN (TensorFlow's default on CPUs without AVX-512, e.g. AMD EPYC,
            # or TF_ENABLE_ONEDNN_OPTS=0) TF's CPU kernels compute a grouped convolution
            # but not its gradients ("Gradients for grouped convolutions are not
            # supported on CPU"): the members convolve one by one in pfor's while loop.
            # Correct, and slower. oneDNN is not forced on: on this project's AMD EPYC
            # machine, oneDNN's batched matmuls rounded differently with the pack's size
            # and between a run and its resumption, which breaks bit-for-bit resumption.
            if not _warned_no_onednn:
                _warned_no_onednn.append(True)
                tf.get_logger().warning(
                    "tf_sgd_regimes: TensorFlow's oneDNN kernels are off on this CPU, so "
                    "without XLA a pack's convolutions run member by member (slower). "
                    "--config.train.jit_compile=auto (which picks XLA for the embedded "
                    "convnets here) or true makes them batched matmuls; "
                    "TF_ENABLE_ONEDNN_OPTS=1, set before TensorFlow is imported, gives "
                    "one grouped convolution per layer (README, 'oneDNN').")
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
    conv = dict(strides=list(strides), padding=padding,
                explicit_paddings=list(explicit_paddings), data_format="NHWC",
                dilations=list(dilations))
    # Only under XLA: TF's own grouped kernel gradient (oneDNN) keeps the members apart,
    # and the masking would cost every step of the convnets' default (non-XLA) path.
    if _in_xla_context():
        y = _xla_grouped_conv(packed_x, packed_kernel, members, conv)
    else:
        y = tf.raw_ops.Conv2D(input=packed_x, filter=packed_kernel, **conv)
    y_shape = tf.shape(y)
    y = tf.reshape(y, tf.stack([y_shape[0], y_shape[1], y_shape[2], members, k_shape[4]]))
    return tf.transpose(y, [3, 0, 1, 2, 4])


def _static(x, kernel) -> bool:
    """The shapes shifted_conv2d needs at trace time: the input's and the kernel's
    spatial sizes."""
    return (x.shape.rank == 5 and None not in x.shape[2:4]
            and kernel.shape.rank == 5 and None not in kernel.shape[1:3])


def _xla_on_cpu() -> bool:
    """XLA compiles for the CPU here: no TPU strategy is tracing and no GPU is visible
    (on both of those XLA's grouped convolution is the accelerator's own)."""
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, (tf.distribute.TPUStrategy,
                             getattr(tf.distribute.experimental, "TPUStrategy", ()))):
        return False
    return not tf.config.list_logical_devices("GPU")


def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple:
    """(output size, padding before, padding after) of TF's "SAME" along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


def shifted_conv2d(x, kernel, strides=(1, 1, 1, 1), padding="SAME", explicit_paddings=(),
                   dilations=(1, 1, 1, 1)):
    """K convolutions, member k's input x[k] with its kernel kernel[k], as kh x kw batched
    matmuls: for each kernel offset (i, j) the input window it sees (a strided slice of
    the padded input) times kernel[:, i, j], summed. The members stay on the batch axis
    of the matmuls, so they cannot mix (no grouped convolution's zero holes, see
    _xla_grouped_conv) and no transposes are needed. Used under XLA on CPU, where XLA
    fuses the slices into the dots; without XLA TF's per-member convolutions are faster
    on the shapes measured (BENCHMARKS.md).

    Args, returns: as grouped_conv2d; x's spatial size and the kernel's must be static.
    """
    if isinstance(padding, bytes):
        padding = padding.decode()
    height, width = x.shape[2], x.shape[3]
    kh, kw = kernel.shape[1], kernel.shape[2]
    (sh, sw), (dh, dw) = (list(strides)[1:3], list(dilations)[1:3])
    if padding == "SAME":
        oh, top, bottom = _same_padding(height, kh, sh, dh)
        ow, left, right = _same_padding(width, kw, sw, dw)
    else:
        top, bottom, left, right = ((list(explicit_paddings)[2:6]) if padding == "EXPLICIT"
                                    else (0, 0, 0, 0))
        oh = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
        ow = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    if top or bottom or left or right:
        x = tf.pad(x, [[0, 0], [0, 0], [top, bottom], [left, right], [0, 0]])
    shape = tf.shape(x)
    members, batch = shape[0], shape[1]
    rows = tf.stack([members, batch * oh * ow, -1])
    y = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                       j * dw:j * dw + (ow - 1) * sw + 1:sw, :]
            part = tf.matmul(tf.reshape(window, rows), kernel[:, i, j])
            y = part if y is None else y + part
    return tf.reshape(y, tf.stack([members, batch, oh, ow, tf.shape(kernel)[4]]))


def _in_xla_context() -> bool:
    if GraphOrParentsInXlaContext is None:
        return True
    return bool(GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _finite_or_zero(t):
    return tf.where(tf.math.is_finite(t), t, tf.zeros_like(t))


def _xla_grouped_conv(packed_x, packed_kernel, members, conv):
    """The grouped Conv2D, with a kernel gradient in which members cannot mix under XLA.

    XLA's CPU compiler rewrites the kernel gradient of a grouped convolution (a
    convolution with batch_group_count = K) into one convolution over an extra spatial
    axis that holds the K groups, dilated by holes (lhs_dilate=2 along it): every output
    element also multiplies the zero holes with the other members' activations or
    backpropagated gradients. 0 x finite is 0, so with finite values this is exact; but
    a diverged member's inf or NaN gives 0 x NaN = NaN in the other members' kernel
    gradients (seen on 2 replicas, where the gradient part is compiled alone; the
    dump's `convolution-base-dilated-window-dilated` ops). Here the kernel gradient
    reads its inputs with non-finite values set to zero, and a member whose inputs held
    any non-finite value gets a NaN kernel gradient (it has diverged: as it would alone).
    The forward pass and the input gradient are the grouped convolutions unchanged (a
    group's output reads only its own kernel and channels).
    """
    x_shape = tf.shape(packed_x)
    k_shape = tf.shape(packed_kernel)

    def non_finite_members(t):
        """[K] bool: member k's channels of a packed [B, H, W, K*C] tensor hold inf/NaN."""
        shape = tf.shape(t)
        per_member = tf.reshape(t, tf.stack([-1, members, shape[3] // members]))
        return tf.logical_not(tf.reduce_all(tf.math.is_finite(per_member), axis=[0, 2]))

    @tf.custom_gradient
    def grouped(x, kernel):
        y = tf.raw_ops.Conv2D(input=x, filter=kernel, **conv)

        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=x_shape, filter=kernel,
                                                out_backprop=dy, **conv)
            dkernel = tf.raw_ops.Conv2DBackpropFilter(
                input=_finite_or_zero(x), filter_sizes=k_shape,
                out_backprop=_finite_or_zero(dy), **conv)
            bad = tf.logical_or(non_finite_members(x), non_finite_members(dy))
            # [kh, kw, C, K*O]: member k's output channels k*O..(k+1)*O.
            per_member = tf.reshape(dkernel, tf.stack(
                [k_shape[0], k_shape[1], k_shape[2], members, k_shape[3] // members]))
            per_member = tf.where(bad[:, None], tf.constant(float("nan"), dkernel.dtype),
                                  per_member)
            return dx, tf.reshape(per_member, k_shape)

        return y, grad

    return grouped(packed_x, packed_kernel)

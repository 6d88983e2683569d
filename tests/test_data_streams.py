"""Token-stream batching: a hand-computed example, replicas, and agreement with steps_per_epoch."""

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import token_windows

TOKENS = np.arange(50, dtype=np.int32)  # B=2 -> rows 0..24 and 25..49, L=25, 4 windows of 5


def _batch(step, **kwargs):
    x, y = token_windows.stream_batch(TOKENS, 2, 5, tf.constant(step), **kwargs)
    return x.numpy(), y.numpy()


def test_hand_example():
    assert token_windows.windows_per_epoch(50, 2, 5) == 4  # (25 - 1) // 5
    x, y = _batch(0)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3, 4], [25, 26, 27, 28, 29]])
    np.testing.assert_array_equal(y, [[1, 2, 3, 4, 5], [26, 27, 28, 29, 30]])
    x, y = _batch(3)
    np.testing.assert_array_equal(x, [[15, 16, 17, 18, 19], [40, 41, 42, 43, 44]])
    np.testing.assert_array_equal(y, [[16, 17, 18, 19, 20], [41, 42, 43, 44, 45]])
    # Step 4 starts the next epoch: window 0 again.
    np.testing.assert_array_equal(_batch(4)[0], _batch(0)[0])


def test_replicas_get_their_rows():
    for step in range(4):
        x, y = _batch(step)
        for replica in range(2):
            x_r, y_r = _batch(step, replica_id=replica, num_replicas=2)
            np.testing.assert_array_equal(x_r, x[replica:replica + 1])
            np.testing.assert_array_equal(y_r, y[replica:replica + 1])


def test_epoch_matches_numpy_reference():
    tokens = np.random.default_rng(0).integers(0, 100, size=1003).astype(np.int32)
    batch_size, unroll = 8, 7
    row_length = len(tokens) // batch_size
    rows = tokens[: batch_size * row_length].reshape(batch_size, row_length)
    windows = token_windows.windows_per_epoch(len(tokens), batch_size, unroll)
    assert windows == (row_length - 1) // unroll
    xs, ys = zip(*(token_windows.stream_batch(tokens, batch_size, unroll, tf.constant(t))
                   for t in range(windows)))
    np.testing.assert_array_equal(np.concatenate(xs, axis=1), rows[:, : windows * unroll])
    np.testing.assert_array_equal(np.concatenate(ys, axis=1), rows[:, 1: windows * unroll + 1])


@pytest.mark.parametrize("num_tokens,batch_size,unroll", [(50, 2, 5), (929589, 64, 35),
                                                          (1000, 7, 3), (36, 1, 35)])
def test_agrees_with_dataset_steps_per_epoch(num_tokens, batch_size, unroll):
    dataset = base.Dataset(
        name="s", task="language_model", train_x=np.zeros(num_tokens, np.int32), train_y=None,
        test_x=np.zeros(10, np.int32), test_y=None, num_outputs=2, input_shape=(unroll,),
        ordering="streams", unroll=unroll,
    )
    assert dataset.steps_per_epoch(batch_size) == token_windows.windows_per_epoch(
        num_tokens, batch_size, unroll
    )


def test_ptb_paper_step_count():
    # Appendix D: 16,560 updates = 40 epochs at B = 64 on PTB's 929,589 training tokens.
    assert 40 * token_windows.windows_per_epoch(929_589, 64, 35) == 16_560


def test_inside_tf_function_with_tensor_step_traces_once():
    tokens = tf.constant(TOKENS)

    @tf.function(jit_compile=True)
    def window(step):
        return token_windows.stream_batch(tokens, 2, 5, step)

    for step in range(6):
        x, _ = window(tf.constant(step, tf.int64))
        np.testing.assert_array_equal(x.numpy(), _batch(step)[0])
    assert window.experimental_get_tracing_count() == 1


def test_bad_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        token_windows.stream_batch(TOKENS, 3, 5, tf.constant(0), num_replicas=2)
    with pytest.raises(ValueError, match="too large"):
        token_windows.stream_batch(TOKENS, 10, 5, tf.constant(0))  # rows of 5 < unroll + 1

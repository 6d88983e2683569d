"""Batching of a token stream into B parallel rows and windows of `unroll` tokens (all LMs)."""

import tensorflow as tf


def windows_per_epoch(num_tokens: int, batch_size: int, unroll: int) -> int:
    """Windows (optimizer steps) in one pass over a stream; agrees with Dataset.steps_per_epoch.

    The stream is cut into `batch_size` rows of L = num_tokens // batch_size tokens; the
    last token of a row is only ever a target, hence (L - 1) // unroll windows.
    """
    row_length = num_tokens // batch_size
    return max((row_length - 1) // unroll, 0)


def _check(num_tokens: int, batch_size: int, unroll: int, num_replicas: int) -> int:
    if batch_size < 1 or unroll < 1:
        raise ValueError(f"batch_size ({batch_size}) and unroll ({unroll}) must be >= 1")
    if batch_size % num_replicas:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {num_replicas} replicas; "
            "choose a global batch size that is a multiple of the replica count"
        )
    windows = windows_per_epoch(num_tokens, batch_size, unroll)
    if windows < 1:
        raise ValueError(
            f"batch_size {batch_size} is too large for a stream of {num_tokens} tokens with "
            f"unroll {unroll}: each of the {batch_size} rows needs at least {unroll + 1} tokens"
        )
    return windows


def stream_batch(tokens, batch_size: int, unroll: int, step, replica_id=0, num_replicas: int = 1):
    """Inputs and next-token targets of one window, for one replica.

    Row r of the B rows is tokens[r*L:(r+1)*L] (L = len(tokens) // B); window t =
    step mod windows_per_epoch gives x = rows[:, t*unroll:(t+1)*unroll] and y = the same
    shifted by one token. Replica i of R gets rows [i*B/R, (i+1)*B/R), so the hidden state
    of each row stays on one replica from window to window. Only the B/R x (unroll + 1)
    tokens needed are gathered: no [B, L] copy per step.

    Args:
      tokens: 1-D integer tensor (or array) of the whole stream; its length must be static.
      batch_size: global batch size B (Python int).
      unroll: window length (Python int).
      step: optimizer step, a scalar integer tensor (a Python int retraces tf.functions).
      replica_id: index of this replica (int or scalar tensor).
      num_replicas: replica count R (Python int); must divide B.

    Returns:
      (x, y), both [B / R, unroll] with the dtype of `tokens`.
    """
    tokens = tf.convert_to_tensor(tokens)
    num_tokens = tokens.shape[0]
    if num_tokens is None:
        raise ValueError("stream_batch needs a token stream of static length")
    windows = _check(num_tokens, batch_size, unroll, num_replicas)
    row_length = num_tokens // batch_size
    rows_per_replica = batch_size // num_replicas
    window = tf.math.floormod(tf.cast(step, tf.int64), windows)
    first_row = tf.cast(replica_id, tf.int64) * rows_per_replica
    rows = first_row + tf.range(rows_per_replica, dtype=tf.int64)
    starts = rows * row_length + window * unroll  # [B/R]
    index = starts[:, None] + tf.range(unroll + 1, dtype=tf.int64)[None, :]
    chunk = tf.gather(tokens, index)  # [B/R, unroll + 1]
    return chunk[:, :-1], chunk[:, 1:]

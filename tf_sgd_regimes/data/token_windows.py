"""Batching of a token stream into B parallel rows and windows of `unroll` tokens (all LMs)."""

import numpy as np
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


def eval_windows(tokens, batch_size: int, unroll: int):
    """Windows that score every target of a stream exactly once, for evaluation.

    Training windows (stream_batch) drop the stream's tail: the last N mod B tokens, each
    row's final partial window and the first token of every row but the first. Evaluation
    must cover the whole split, so here the N - 1 targets tokens[1:] are cut into B
    contiguous rows of ceil((N - 1) / B) targets (the last rows shorter, possibly empty);
    row r reads its inputs from the token just before its first target, so each row is one
    stream carried across its windows. The last window (and a short row) is padded with
    weight 0. With B = 1 this is one stream over the whole split, as Zaremba et al. (2014)
    evaluate.

    Args:
      tokens: 1-D int array, the stream.
      batch_size: number of rows B (the evaluation batch size).
      unroll: window length.

    Yields:
      (x, y, weights, carry): int32 [B, unroll] inputs and targets, float32 [B, unroll]
      weights (1 for a real target, 0 for padding), and carry (False for the first
      window: the carried state starts from zero).
    """
    tokens = np.asarray(tokens, np.int32)
    if batch_size < 1 or unroll < 1:
        raise ValueError(f"batch_size ({batch_size}) and unroll ({unroll}) must be >= 1")
    targets = tokens.size - 1
    if targets < 1:
        raise ValueError(f"a stream of {tokens.size} tokens has no target to evaluate")
    row_targets = -(-targets // batch_size)  # ceil
    windows = -(-row_targets // unroll)
    width = windows * unroll
    x = np.zeros([batch_size, width], np.int32)
    y = np.zeros([batch_size, width], np.int32)
    weights = np.zeros([batch_size, width], np.float32)
    for row in range(batch_size):
        first = row * row_targets  # index of the input that predicts the row's first target
        count = max(0, min(row_targets, targets - first))
        x[row, :count] = tokens[first:first + count]
        y[row, :count] = tokens[first + 1:first + 1 + count]
        weights[row, :count] = 1.0
    for t in range(windows):
        cut = slice(t * unroll, (t + 1) * unroll)
        yield x[:, cut], y[:, cut], weights[:, cut], t > 0

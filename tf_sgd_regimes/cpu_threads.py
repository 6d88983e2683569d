"""TensorFlow's intra-op thread pool size (config.train.intra_op_threads), set at start-up.

A packed step of a tiny model (the demo's 78 MLPs at small batch sizes) is a few dozen
kernels of microseconds each; handing each of them to a pool of threads costs more than
the second core gives back (BENCHMARKS.md, "One intra-op thread": the whole demo sweep and
the B = 1 step ~1.4x faster with one thread, the same records). Big convolutions and
matmuls want every core, so the default stays TensorFlow's (one thread per core) and an
experiment opts in.

The pool is process-wide and is fixed once TensorFlow's runtime has started (the first op
or device query), so a sweep started after that (a notebook's second cell) cannot change it:
it says so and runs with the pool it has. Speed only: results are the same either way.
"""

import sys
from typing import Optional, TextIO

import tensorflow as tf

FIELD = "config.train.intra_op_threads"


def requested(config) -> int:
    """The config's thread count; 0 = TensorFlow's default. ValueError naming the field."""
    value = config.get("train", {}).get("intra_op_threads", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{FIELD} must be an integer >= 0 (got {value!r}): 0 keeps "
                         "TensorFlow's default (one thread per core), 1 suits tiny models")
    return value


def apply(config, stream: Optional[TextIO] = None) -> bool:
    """Sets the intra-op pool to the config's size; True if it holds that size now."""
    threads = requested(config)
    if threads == 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime has started: the pool is fixed for this process
        print(f"[run] {FIELD}={threads} not applied: TensorFlow's runtime had already "
              "started in this process, so its thread pools are fixed (results are the same, "
              "only speed differs). To apply it, start the sweep in a fresh process, or call "
              "tf.config.threading.set_intra_op_parallelism_threads before any TensorFlow op.",
              file=stream or sys.stdout, flush=True)
        return False
    return True

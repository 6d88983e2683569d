"""What the data fingerprint costs: hashing a CIFAR-10-sized data set vs copying it once.

    .venv/bin/python tools/benchmark_fingerprint.py [--repeats=5]

A sweep fingerprints its data set once at start (data/base.fingerprint: SHA-256 over the
train and test arrays). The reference is one np.copy of the same arrays (a memory pass),
timed alternately in the same run; the medians and their ratio are printed.
"""

import argparse
import statistics
import time

import numpy as np

from tf_sgd_regimes.data import base


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # CIFAR-10 as its loader holds it: float32 images, int32 labels.
    train_x = rng.random((50_000, 32, 32, 3), dtype=np.float32)
    test_x = rng.random((10_000, 32, 32, 3), dtype=np.float32)
    train_y = rng.integers(0, 10, 50_000).astype(np.int32)
    test_y = rng.integers(0, 10, 10_000).astype(np.int32)
    megabytes = sum(a.nbytes for a in (train_x, test_x, train_y, test_y)) / 2**20
    hashing, copying = [], []
    for _ in range(args.repeats):
        dataset = base.Dataset("cifar10_like", "classification", train_x, train_y, test_x,
                               test_y, 10, (32, 32, 3))  # a new object: no cached fingerprint
        start = time.perf_counter()
        base.fingerprint(dataset)
        hashing.append(time.perf_counter() - start)
        start = time.perf_counter()
        copies = [np.copy(a) for a in (train_x, test_x, train_y, test_y)]
        copying.append(time.perf_counter() - start)
        del copies
    h, c = statistics.median(hashing), statistics.median(copying)
    print(f"{megabytes:.0f} MB: fingerprint {h:.3f} s ({megabytes / h:.0f} MB/s), "
          f"copy {c:.3f} s, fingerprint/copy {h / c:.1f}x (medians of {args.repeats})")


if __name__ == "__main__":
    main()

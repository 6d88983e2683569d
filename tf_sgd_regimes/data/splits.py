"""Seeded held-out splits of a training set (the optional validation split)."""

import numpy as np


def check_fraction(validation_fraction: float) -> None:
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"config.data.validation_fraction must be in [0, 1), got {validation_fraction}"
        )


def holdout_indices(num_examples: int, validation_fraction: float, seed: int):
    """Disjoint (train, validation) index arrays; both sorted, so the data order is kept.

    Args:
      num_examples: size of the training set to split.
      validation_fraction: share held out (rounded to whole examples, at least one).
      seed: seed of the split (fixed per data set so every run sees the same split).

    Returns:
      (train_indices, validation_indices), int64 arrays.
    """
    check_fraction(validation_fraction)
    num_validation = max(1, int(round(validation_fraction * num_examples)))
    if num_validation >= num_examples:
        raise ValueError(
            f"validation_fraction {validation_fraction} leaves no training examples "
            f"out of {num_examples}"
        )
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(order[num_validation:]), np.sort(order[:num_validation])

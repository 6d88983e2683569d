"""A synthetic language: a seeded first-order Markov chain whose entropy rate is known exactly."""

import numpy as np

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import splits


def transition_matrix(vocab_size: int = 32, concentration: float = 0.2, uniform_mix: float = 0.01,
                      seed: int = 0) -> np.ndarray:
    """Row-stochastic P[i, j] = Pr(next = j | current = i).

    Each row is a Dirichlet(concentration) draw (small concentration = few likely
    successors, so context matters), mixed with `uniform_mix` of the uniform distribution
    so every transition has positive probability: the chain is irreducible and aperiodic,
    its stationary distribution unique and every log-probability finite.
    """
    if vocab_size < 2:
        raise ValueError(f"config.data.vocab_size must be >= 2, got {vocab_size}")
    if not 0.0 < uniform_mix <= 1.0:
        raise ValueError(f"config.data.uniform_mix must be in (0, 1], got {uniform_mix}")
    rng = np.random.default_rng(seed)
    rows = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
    matrix = (1.0 - uniform_mix) * rows + uniform_mix / vocab_size
    return matrix / matrix.sum(axis=1, keepdims=True)


def stationary_distribution(matrix: np.ndarray) -> np.ndarray:
    """π with π P = π and Σ π = 1 (one linear solve; unique for an irreducible chain)."""
    size = matrix.shape[0]
    system = matrix.T - np.eye(size)
    system[-1, :] = 1.0  # replace one (redundant) balance equation by the normalisation
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    return np.linalg.solve(system, rhs)


def entropy_rate(matrix: np.ndarray) -> float:
    """H = -Σ_i π_i Σ_j P_ij log P_ij in nats: the best achievable per-token cross-entropy."""
    pi = stationary_distribution(matrix)
    row_entropy = -np.sum(matrix * np.log(matrix), axis=1)
    return float(pi @ row_entropy)


def sample_stream(matrix: np.ndarray, num_tokens: int, seed: int) -> np.ndarray:
    """int32 stream of the chain, started from its stationary distribution (so stationary)."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(matrix, axis=1)
    cumulative[:, -1] = 1.0  # guard against round-off leaving the last bin short
    start = np.cumsum(stationary_distribution(matrix))
    start[-1] = 1.0
    uniforms = rng.random(num_tokens)
    stream = np.empty(num_tokens, np.int32)
    state = int(np.searchsorted(start, uniforms[0], side="right"))
    stream[0] = state
    for position in range(1, num_tokens):
        state = int(np.searchsorted(cumulative[state], uniforms[position], side="right"))
        stream[position] = state
    return stream


def bounds(vocab_size: int = 32, concentration: float = 0.2, uniform_mix: float = 0.01,
           chain_seed: int = 0) -> dict:
    """What a model can reach on the chain: the entropy rate's perplexity exp(H) (the best
    possible), and the unigram perplexity (the best without context)."""
    return _bounds_of(transition_matrix(vocab_size, concentration, uniform_mix, chain_seed))


def _bounds_of(matrix: np.ndarray) -> dict:
    pi = stationary_distribution(matrix)
    entropy = entropy_rate(matrix)
    # A model that ignores context can do no better than the unigram entropy.
    return {"entropy_rate_nats": entropy, "optimal_perplexity": float(np.exp(entropy)),
            "unigram_perplexity": float(np.exp(-np.sum(pi * np.log(pi))))}


def load_synthetic_language(vocab_size: int = 32, concentration: float = 0.2,
                            uniform_mix: float = 0.01, chain_seed: int = 0,
                            num_train_tokens: int = 100_000, num_test_tokens: int = 20_000,
                            unroll: int = 35, validation_fraction: float = 0.0) -> base.Dataset:
    """Token streams from a seeded Markov chain; info["optimal_perplexity"] = exp(H).

    The chain (from chain_seed) and its streams (train from chain_seed + 1, test from
    chain_seed + 2) are fixed, so every run sees the same language and data.

    Args:
      vocab_size, concentration, uniform_mix, chain_seed: see transition_matrix.
      num_train_tokens, num_test_tokens: stream lengths.
      unroll: window length of the stream batching.
      validation_fraction: if > 0, the last share of the training stream is held out and
        returned as the evaluation stream (split="validation").
    """
    splits.check_fraction(validation_fraction)
    matrix = transition_matrix(vocab_size, concentration, uniform_mix, chain_seed)
    train = sample_stream(matrix, num_train_tokens, chain_seed + 1)
    split = "test"
    if validation_fraction > 0:
        # A contiguous tail, not a random subset: a stream's order is its content.
        cut = num_train_tokens - max(1, int(round(validation_fraction * num_train_tokens)))
        train, evaluation = train[:cut], train[cut:]
        split = "validation"
    else:
        evaluation = sample_stream(matrix, num_test_tokens, chain_seed + 2)
    return base.Dataset(
        name="synthetic_language",
        task="language_model",
        train_x=train,
        train_y=None,
        test_x=evaluation,
        test_y=None,
        num_outputs=vocab_size,
        input_shape=(unroll,),
        ordering="streams",
        unroll=unroll,
        split=split,
        info={
            "source": "seeded first-order Markov chain (tf_sgd_regimes.data.synthetic_language)",
            **_bounds_of(matrix),
            "vocab_size": vocab_size,
            "concentration": concentration,
            "uniform_mix": uniform_mix,
            "chain_seed": chain_seed,
        },
    )

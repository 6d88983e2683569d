"""Synthetic Markov language: exact entropy rate vs independent computation and samples."""

import numpy as np
import pytest

from tf_sgd_regimes import data
from tf_sgd_regimes.data import synthetic_language as synthetic


def _power_iteration(matrix, steps=5000):
    pi = np.full(matrix.shape[0], 1.0 / matrix.shape[0])
    for _ in range(steps):
        pi = pi @ matrix
    return pi


def test_entropy_rate_matches_independent_computation():
    matrix = synthetic.transition_matrix(vocab_size=16, seed=3)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    assert (matrix > 0).all()
    pi = _power_iteration(matrix)
    np.testing.assert_allclose(synthetic.stationary_distribution(matrix), pi, atol=1e-10)
    expected = sum(-pi[i] * sum(p * np.log(p) for p in matrix[i]) for i in range(16))
    assert synthetic.entropy_rate(matrix) == pytest.approx(expected, rel=1e-10)


def test_stream_cross_entropy_and_bigrams_match_the_chain():
    matrix = synthetic.transition_matrix(vocab_size=32, seed=0)
    stream = synthetic.sample_stream(matrix, 200_000, seed=11)
    losses = -np.log(matrix[stream[:-1], stream[1:]])
    # Consecutive losses are correlated through the state: standard error from batch means.
    batch_means = losses[: len(losses) // 100 * 100].reshape(100, -1).mean(axis=1)
    standard_error = batch_means.std(ddof=1) / np.sqrt(len(batch_means))
    assert abs(losses.mean() - synthetic.entropy_rate(matrix)) < 4 * standard_error
    counts = np.zeros_like(matrix)
    np.add.at(counts, (stream[:-1], stream[1:]), 1)
    visits = counts.sum(axis=1, keepdims=True)
    sigma = np.sqrt(matrix * (1 - matrix) / visits)
    assert (np.abs(counts / visits - matrix) < 5 * sigma + 1e-3).all()
    # Unigram frequencies follow the stationary distribution.
    frequency = np.bincount(stream, minlength=32) / len(stream)
    np.testing.assert_allclose(frequency, synthetic.stationary_distribution(matrix), atol=0.01)


def test_dataset_fields_and_determinism():
    dataset = data.get_dataset("synthetic_language", num_train_tokens=5000, num_test_tokens=1000)
    again = data.get_dataset("synthetic_language", num_train_tokens=5000, num_test_tokens=1000)
    np.testing.assert_array_equal(dataset.train_x, again.train_x)
    assert not np.array_equal(dataset.train_x[:1000], dataset.test_x)
    assert dataset.task == "language_model" and dataset.ordering == "streams"
    assert dataset.train_x.dtype == np.int32 and dataset.num_outputs == 32
    assert dataset.train_x.max() < 32 and len(dataset.test_x) == 1000
    matrix = synthetic.transition_matrix(vocab_size=32, seed=0)
    assert dataset.info["optimal_perplexity"] == pytest.approx(
        np.exp(synthetic.entropy_rate(matrix)))
    assert dataset.info["optimal_perplexity"] < dataset.info["unigram_perplexity"] < 32


def test_validation_fraction_holds_out_the_tail():
    full = data.get_dataset("synthetic_language", num_train_tokens=5000)
    held = data.get_dataset("synthetic_language", num_train_tokens=5000, validation_fraction=0.2)
    assert held.split == "validation"
    np.testing.assert_array_equal(held.train_x, full.train_x[:4000])
    np.testing.assert_array_equal(held.test_x, full.train_x[4000:])


def test_report_states_the_chains_bound_beside_the_best_run():
    import pandas as pd

    from tf_sgd_regimes.report import analysis, compose

    fields = dict(vocab_size=16, chain_seed=5)
    loaded = synthetic.load_synthetic_language(num_train_tokens=2000, num_test_tokens=500,
                                               unroll=5, **fields)
    # The bound from the plain samples of a long stream: exp of the mean -log P(next | prev).
    matrix = synthetic.transition_matrix(seed=5, vocab_size=16)
    stream = synthetic.sample_stream(matrix, 200_000, seed=1)
    empirical = np.exp(-np.log(matrix[stream[:-1], stream[1:]]).mean())
    assert loaded.info["optimal_perplexity"] == pytest.approx(empirical, rel=0.01)

    bound = loaded.info["optimal_perplexity"]
    optimal = pd.DataFrame({"optimizer": ["sgd", "momentum"], "batch_size": [8, 16],
                            "test_perplexity_mean": [2 * bound, 1.5 * bound]})
    settings = analysis.Settings(selection_metric="test_perplexity", selection_mode="min")
    config = {"data": dict(name="synthetic_language", **fields)}
    _, line = compose._language_bound(config, optimal, settings)
    assert f"{loaded.info['optimal_perplexity']:.3f} at best" in line
    assert f"{loaded.info['unigram_perplexity']:.3f}" in line
    assert "(momentum, B = 16), 1.500x the bound" in line
    assert compose._language_bound({"data": {"name": "digits"}}, optimal, settings) == []

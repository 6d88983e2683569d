"""The TF noise probe end to end: B_simple of Keras weights vs closed forms; the engine hook."""

import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import engine_config, tiny_dataset

from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import noise_probe
from tf_sgd_regimes import pack_checkpoint


def regression_problem(num_train=300, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_train, dim)).astype(np.float32)
    y = (x @ rng.normal(size=dim) + 0.5 * rng.normal(size=num_train)).astype(np.float32)
    dataset = types.SimpleNamespace(name="regression", train_x=x, train_y=y, ordering="shuffle")
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(1, use_bias=False)])
    return dataset, model


def squared_error(outputs, targets, inputs):
    return tf.square(outputs[:, 0] - targets)


def within(estimate, se, truth, z=4.5):
    return abs(estimate - truth) <= z * se


def test_linear_regression_matches_closed_form():
    dataset, model = regression_problem()
    w = np.array([[0.3], [-0.2], [0.1], [0.4], [0.0]], np.float32)
    # Per-example gradient of (x.w - y)^2: 2 (x.w - y) x. G is their mean and tr(Sigma) the
    # mean squared deviation from it (sampling with replacement from the training set).
    residual = dataset.train_x @ w[:, 0] - dataset.train_y
    per_example = 2.0 * residual[:, None] * dataset.train_x.astype(np.float64)
    grad = per_example.mean(axis=0)
    true_grad_sq = float(grad @ grad)
    true_trace = float(np.mean(np.sum((per_example - grad) ** 2, axis=1)))
    out = noise_probe.measure(model, [w], [], dataset, squared_error, batch_small=4,
                              batch_big=32, num_batches=300, seed=1)
    assert within(out["grad_sq"], out["grad_sq_se"], true_grad_sq), (out, true_grad_sq)
    assert within(out["trace_sigma"], out["trace_sigma_se"], true_trace), (out, true_trace)
    assert out["b_simple"] == pytest.approx(out["trace_sigma"] / out["grad_sq"])
    # The probe must be precise enough to be useful, not only unbiased.
    assert out["b_simple"] == pytest.approx(true_trace / true_grad_sq, rel=0.25)
    # E|g_b|^2 = |G|^2 + tr(Sigma) / b at the small batch.
    assert out["sq_norm_small"] == pytest.approx(true_grad_sq + true_trace / 4, rel=0.1)


def test_softmax_classifier_with_l2_matches_closed_form():
    dataset = tiny_dataset(num_train=60, num_features=4, num_classes=3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    l2 = 0.05
    logits = dataset.train_x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = p - np.eye(3)[dataset.train_y]  # d(cross-entropy)/d(logits)
    per_example = np.concatenate(
        [(dataset.train_x[:, :, None] * delta[:, None, :]).reshape(60, -1), delta], axis=1)
    per_example[:, :12] += l2 * kernel.reshape(-1)  # only the kernel is regularized
    grad = per_example.mean(axis=0)
    true_grad_sq = float(grad @ grad)
    true_trace = float(np.mean(np.sum((per_example - grad) ** 2, axis=1)))
    out = noise_probe.measure(model, [kernel, bias], [], dataset, "classification",
                              batch_small=2, batch_big=16, num_batches=300, seed=3, l2=l2,
                              regularized=[True, False])
    assert within(out["grad_sq"], out["grad_sq_se"], true_grad_sq), (out, true_grad_sq)
    assert within(out["trace_sigma"], out["trace_sigma_se"], true_trace), (out, true_trace)


def test_stacked_members_equal_separate_measurements():
    dataset, model = regression_problem()
    weights = [np.full((5, 1), 0.1, np.float32), np.full((5, 1), -0.3, np.float32)]
    stacked = noise_probe.measure_stacked(model, [np.stack(weights)], [], dataset,
                                          squared_error, 4, 16, 3, seed=7)
    for member, w in zip(stacked, weights):
        alone = noise_probe.measure(model, [w], [], dataset, squared_error, 4, 16, 3, seed=7)
        assert member["grad_sq"] == pytest.approx(alone["grad_sq"], rel=1e-5)
        assert member["trace_sigma"] == pytest.approx(alone["trace_sigma"], rel=1e-5)


def test_bad_settings_are_refused():
    dataset, model = regression_problem()
    w = [np.zeros((5, 1), np.float32)]
    with pytest.raises(ValueError, match="batch_big a multiple of batch_small"):
        noise_probe.measure(model, w, [], dataset, squared_error, 4, 10, 1, seed=0)
    streamed = types.SimpleNamespace(name="ptb", train_x=None, ordering="streams")
    with pytest.raises(ValueError, match="noise_scale.enabled=False"):
        noise_probe.measure(model, w, [], streamed, squared_error, 4, 8, 1, seed=0)


def test_engine_hook_records_init_and_mid_noise_scale():
    dataset = tiny_dataset(num_train=64)
    config = engine_config(hidden=(8,), l2=1e-3, steps_per_call=5)
    config.unlock()
    config.train.noise_scale.update(enabled=True, batch_small=4, batch_big=16, num_batches=2)
    config.lock()
    engine = engine_lib.Engine(config, dataset, tf.distribute.get_strategy())
    members = [engine_lib.Member("a", 0.1, 0.0, 0), engine_lib.Member("b", 0.4, 0.9, 1),
               engine_lib.Member("c", 0.3, 0.0, 0)]
    chunks = []
    results = engine.train_pack(members, 8, 23, on_chunk=chunks.append)
    assert 11 in [c.step for c in chunks]  # a chunk ends exactly at total_steps // 2
    # Same seed, same initial weights and draws: same B_simple at init, not mid-training.
    assert results[2].metrics["noise_scale_init"] == results[0].metrics["noise_scale_init"]
    assert results[2].metrics["noise_scale_mid"] != results[0].metrics["noise_scale_mid"]
    for k, result in enumerate(results):
        init, mid = result.metrics["noise_scale_init"], result.metrics["noise_scale_mid"]
        grad_sq = result.metrics["noise_scale_mid_grad_sq"]
        trace = result.metrics["noise_scale_mid_trace_sigma"]
        assert init is not None and init > 0 and np.isfinite(grad_sq) and trace > 0
        # A one-draw |G|^2 estimate can come out <= 0 late in training: then no ratio.
        assert mid == (pytest.approx(trace / grad_sq) if grad_sq > 0 else None)
        # Init equals the probe on a freshly built model of the member's seed (same draws).
        fresh = engine.build_model(seed=members[k].seed)
        direct = noise_probe.measure(
            fresh, [w.numpy() for w in fresh.trainable_variables],
            [v.numpy() for v in fresh.non_trainable_variables], dataset, "classification",
            4, 16, 2, seed=0, l2=1e-3,
            regularized=engine._runner(3, 8).regularized)
        assert init == pytest.approx(direct["b_simple"], rel=1e-4)
    pooled = results[0].metrics["noise_scale_init_trace_sigma"] / results[0].metrics[
        "noise_scale_init_grad_sq"]
    assert results[0].metrics["noise_scale_init"] == pytest.approx(pooled)
    config.unlock()
    config.train.noise_scale.enabled = False
    config.lock()
    assert noise_probe.PackProbe.from_config(types.SimpleNamespace(config=config), None, 23) \
        is None


def test_step_zero_is_measured_once_per_engine_and_seeds(monkeypatch):
    """Every pack of a sweep with the same seeds starts from the same weights and draws
    the same examples at step 0, so the engine measures step 0 once and reuses it."""
    dataset = tiny_dataset(num_train=64)
    config = engine_config(hidden=(8,), steps_per_call=5)
    config.unlock()
    config.train.noise_scale.update(enabled=True, batch_small=4, batch_big=16, num_batches=2)
    config.lock()
    engine = engine_lib.Engine(config, dataset, tf.distribute.get_strategy())
    calls, templates = [], set()
    measure = noise_probe.measure_stacked
    monkeypatch.setattr(noise_probe, "measure_stacked", lambda *a, **k: calls.append(
        k["seed"]) or templates.add(id(a[0])) or measure(*a, **k))
    pack = lambda lr, seeds: [engine_lib.Member(f"{lr}_{s}", lr, 0.0, s)  # noqa: E731
                              for s in seeds]
    first = engine.train_pack(pack(0.1, [0, 1]), 8, 10)
    second = engine.train_pack(pack(0.4, [0, 1]), 4, 10)  # other LR and batch, same seeds
    assert calls == [0, 5, 5]  # step 0 once, the middle step in each pack
    for a, b in zip(first, second):
        for part in ("", "_grad_sq", "_trace_sigma"):
            assert a.metrics[f"noise_scale_init{part}"] == b.metrics[f"noise_scale_init{part}"]
        assert a.metrics["noise_scale_mid"] != b.metrics["noise_scale_mid"]
    third = engine.train_pack(pack(0.1, [1, 2]), 8, 10)  # other seeds: measured again
    assert calls == [0, 5, 5, 0, 5]
    assert third[0].metrics["noise_scale_init"] == first[1].metrics["noise_scale_init"]
    # The B = 4 pack ran under XLA (auto) and a pack of another size has its own runner:
    # three runners (and templates), yet the probe traces its function through the
    # engine's first template only, and measures the same values.
    fourth = engine.train_pack(pack(0.1, [0, 1, 2]), 8, 10)
    assert len(engine._runners) == 3 and len(templates) == 1
    assert [r.metrics["noise_scale_mid"] for r in fourth[:2]] == \
        [r.metrics["noise_scale_mid"] for r in first]


@pytest.mark.parametrize("stop_after_chunks", [2, 3])
def test_a_resumed_pack_keeps_its_noise_scale(tmp_path, stop_after_chunks):
    """Preempted before (2 chunks: step 10) or after (3 chunks: step 11) the middle step:
    the resumed pack reports the uninterrupted run's values, measured once each."""
    dataset = tiny_dataset(num_train=64)
    config = engine_config(hidden=(8,), steps_per_call=5)
    config.unlock()
    config.train.noise_scale.update(enabled=True, batch_small=4, batch_big=16, num_batches=2)
    config.lock()
    members = [engine_lib.Member("a", 0.1, 0.0, 0), engine_lib.Member("b", 0.4, 0.9, 1)]

    def engine():
        return engine_lib.Engine(config, dataset, tf.distribute.get_strategy())

    uninterrupted = engine().train_pack(members, 8, 23)
    directory = str(tmp_path / "ckpt")
    chunks = []
    with pytest.raises(pack_checkpoint.Preempted):
        engine().train_pack(members, 8, 23,
                            checkpoint=pack_checkpoint.PackCheckpoint(directory, every_s=1e9),
                            on_chunk=chunks.append,
                            should_stop=lambda: len(chunks) >= stop_after_chunks - 1)
    measured = []
    original = noise_probe.measure_stacked
    try:
        noise_probe.measure_stacked = lambda *a, **k: measured.append(1) or original(*a, **k)
        resumed = engine().train_pack(
            members, 8, 23, checkpoint=pack_checkpoint.PackCheckpoint(directory, every_s=1e9))
    finally:
        noise_probe.measure_stacked = original
    assert len(measured) == (1 if stop_after_chunks == 2 else 0)  # only what was still due
    for got, want in zip(resumed, uninterrupted):
        for when in ("init", "mid"):
            for suffix in ("", "_grad_sq", "_trace_sigma"):
                key = f"noise_scale_{when}{suffix}"
                assert want.metrics[key] is not None or suffix == ""
                assert got.metrics[key] == want.metrics[key], key


def test_report_puts_b_simple_beside_the_breakpoint(tmp_path):
    from tf_sgd_regimes import report

    records = []
    for batch in (8, 16, 32, 64, 128, 256):
        best = min(batch / 64, 1.0)  # the optimum doubles with B up to B* = 64
        for lr in (2.0**i for i in range(-4, 2)):
            for seed in (0, 1, 2):
                metrics = {"test_accuracy": 0.9 - 0.01 * np.log2(lr / best) ** 2 - 1e-3 * seed,
                           "train_loss": 0.1, "noise_scale_init_grad_sq": 2.0,
                           "noise_scale_init_trace_sigma": 60.0,
                           "noise_scale_mid_grad_sq": 1.0 + seed,
                           "noise_scale_mid_trace_sigma": 100.0}
                records.append({"cell_id": f"sgd_{batch}_{lr}_{seed}", "status": "complete",
                                "hparams": {"optimizer": "sgd", "batch_size": batch,
                                            "effective_lr": lr, "seed": seed, "epochs": 1.0},
                                "metrics": metrics})
    config = {"name": "synthetic", "analysis": {"best_k": 2, "num_seeds": 3,
                                                "num_bootstrap": 20}}
    result = report.generate(str(tmp_path), config, records)
    summary = result["noise_scale"]["sgd"]
    assert summary["init"] == pytest.approx(30.0)  # pooled: mean tr(Sigma) / mean |G|^2
    assert summary["mid"] == pytest.approx(100.0 / 1.5)  # best 2 of 3 seeds: 0 and 1
    assert summary["breakpoint"] == pytest.approx(64.0, rel=0.05)
    assert f"B_simple/B* init {30.0 / summary['breakpoint']:.3g}" in result["text"]
    assert os.path.exists(result["exports"]["noise_scale"])
    assert result["figures"]["noise_scale"]

"""The packed engine against an independent one-member-at-a-time reference written here."""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import engine_config, pack_weights, run_python, tiny_dataset
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import models, optimizers, schedules
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes import samplers

BATCH = 6  # 40 examples: epoch boundaries fall inside batches (40 % 6 != 0)
STEPS = 30  # 4.5 epochs; the schedule decays at steps 15, 17, 18, 20, ..., 29
HIDDEN = (8,)
L2 = 1e-3
MEMBERS = (
    engine_lib.Member("sgd_a", 0.5, 0.0, 0),
    engine_lib.Member("mom_b", 0.25, 0.9, 1),
    engine_lib.Member("mom_c", 1.0, 0.9, 2),
    engine_lib.Member("sgd_d", 0.1, 0.0, 3),
)


def reference_run(member, dataset, batch_size, total_steps, l2=L2, hidden=HIDDEN):
    """Trains one member alone with plain TF: Keras model, PaperMomentum, a Python loop.

    Data order: a continuous stream of positions 0, 1, 2, ...; position p is example
    permutation(seed, p // N)[p % N], so batches straddle epoch boundaries.

    Returns:
      (model, losses): the trained model and the training objective at every step.
    """
    model = models.get_model("mlp", dataset.input_shape, dataset.num_outputs,
                             seed=member.seed, hidden=hidden)
    learning_rate = member.effective_lr * (1.0 - member.momentum)
    optimizer = optimizers.PaperMomentum(
        schedules.PaperSchedule(learning_rate, total_steps), momentum=member.momentum)
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    n = dataset.num_train
    orders = {}
    losses = []
    for step in range(total_steps):
        positions = np.arange(step * batch_size, (step + 1) * batch_size)
        index = []
        for p in positions:
            epoch = int(p // n)
            if epoch not in orders:
                orders[epoch] = np.random.Generator(
                    np.random.PCG64([member.seed, epoch])).permutation(n)
            index.append(orders[epoch][p % n])
        x = tf.constant(dataset.train_x[index])
        y = tf.constant(dataset.train_y[index])
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            data_loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            loss = data_loss + 0.5 * l2 * tf.add_n([tf.reduce_sum(k * k) for k in kernels])
        losses.append(float(loss))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return model, losses


def numpy_metrics(model, dataset, l2=L2):
    """Final metrics of a reference model, computed with numpy from its logits."""

    def cross_entropy(logits, labels):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_probs[np.arange(len(labels)), labels]

    test_logits = np.asarray(model(dataset.test_x), np.float64)
    train_logits = np.asarray(model(dataset.train_x), np.float64)
    penalty = 0.5 * l2 * sum(float(np.sum(np.square(layer.kernel.numpy())))
                             for layer in model.layers if isinstance(layer, keras.layers.Dense))
    train_data_loss = cross_entropy(train_logits, dataset.train_y).mean()
    return {
        "test_accuracy": float(np.mean(test_logits.argmax(1) == dataset.test_y)),
        "test_loss": float(cross_entropy(test_logits, dataset.test_y).mean()),
        "train_accuracy": float(np.mean(train_logits.argmax(1) == dataset.train_y)),
        "train_data_loss": float(train_data_loss),
        "train_loss": float(train_data_loss + penalty),
    }


def train(members, config=None, dataset=None, batch_size=BATCH, total_steps=STEPS, **kwargs):
    """(results, weights per member, engine) of one packed run."""
    dataset = dataset or tiny_dataset()
    engine = engine_lib.Engine(config or engine_config(hidden=HIDDEN, l2=L2), dataset,
                               tf.distribute.get_strategy())
    results = engine.train_pack(list(members), batch_size, total_steps, **kwargs)
    return results, pack_weights(engine, len(members), batch_size), engine


@pytest.fixture(scope="module")
def packed():
    return train(MEMBERS)


def assert_same_results(a, b, rtol=1e-6):
    assert [r.cell_id for r in a] == [r.cell_id for r in b]
    for x, y in zip(a, b):
        assert (x.status, x.diverged_step, x.steps_done) == (y.status, y.diverged_step,
                                                               y.steps_done)
        assert set(x.metrics) == set(y.metrics)
        for name in x.metrics:
            if x.metrics[name] is None:
                assert y.metrics[name] is None
            else:
                assert x.metrics[name] == pytest.approx(y.metrics[name], rel=rtol, abs=1e-7)


def test_budget_crosses_decays_and_unaligned_epoch_boundaries():
    # Guards the premise of the reference test below.
    factors = schedules.schedule_values(1.0, STEPS)
    assert len(set(factors.tolist())) >= 5
    assert tiny_dataset().num_train % BATCH != 0
    assert STEPS * BATCH > 2 * tiny_dataset().num_train


@pytest.mark.parametrize("k", range(len(MEMBERS)))
def test_each_member_matches_its_independent_reference(packed, k):
    results, weights, _ = packed
    dataset = tiny_dataset()
    model, _ = reference_run(MEMBERS[k], dataset, BATCH, STEPS)
    reference_weights = [v.numpy() for v in model.trainable_variables]
    assert len(weights[k]) == len(reference_weights)
    for got, want in zip(weights[k], reference_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    result = results[k]
    assert (result.cell_id, result.status, result.diverged_step, result.steps_done) == (
        MEMBERS[k].cell_id, "complete", None, STEPS)
    expected = numpy_metrics(model, dataset)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_members_really_differ(packed):
    # Different seeds and rates give different weights: the pack is not one model K times.
    _, weights, _ = packed
    for a in range(len(MEMBERS)):
        for b in range(a + 1, len(MEMBERS)):
            assert not np.allclose(weights[a][0], weights[b][0])


def test_result_does_not_depend_on_pack_composition(packed):
    results, weights, _ = packed
    k = 1
    alone, alone_weights, _ = train([MEMBERS[k]])
    assert_same_results(alone, [results[k]])
    for got, want in zip(alone_weights[0], weights[k]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # Order within the pack does not matter either.
    reordered, _, _ = train(MEMBERS[::-1])
    assert_same_results(reordered[::-1], results)


def test_shuffle_sampler_uses_every_example_once_per_epoch():
    dataset = tiny_dataset()
    sampler = samplers.ShuffleSampler(dataset, tf.distribute.get_strategy())
    n = dataset.num_train
    # Three chunks of 7 steps of 6 = 126 positions: epochs 0-2 whole, epoch 3 in part.
    rows = np.concatenate([sampler.host_indices([3, 4], start, 7, BATCH, 9)[:, :7 * BATCH]
                           for start in (0, 7, 14)], axis=1)
    for row, seed in zip(rows, (3, 4)):
        for epoch in (0, 1, 2):
            assert sorted(row[epoch * n:(epoch + 1) * n]) == list(range(n))
        expected = np.random.Generator(np.random.PCG64([seed, 3])).permutation(n)
        np.testing.assert_array_equal(row[3 * n:], expected[:len(row) - 3 * n])
    assert not np.array_equal(rows[0], rows[1])


# -- divergence -----------------------------------------------------------------------

def first_bad_step(losses, bound):
    for step, loss in enumerate(losses):
        if not np.isfinite(loss) or loss > bound:
            return step
    return None


def test_huge_lr_member_diverges_and_leaves_pack_mates_untouched():
    dataset = tiny_dataset()
    huge = engine_lib.Member("huge", 1e4, 0.0, 5)
    mates = [MEMBERS[0], MEMBERS[3]]
    with_huge, weights_with, _ = train([mates[0], huge, mates[1]])
    without, weights_without, _ = train(mates)
    assert with_huge[1].status == "diverged"
    _, losses = reference_run(huge, dataset, BATCH, STEPS)
    assert with_huge[1].diverged_step == first_bad_step(losses, 1e3)
    assert with_huge[1].diverged_step <= 3
    assert all(v is None for v in with_huge[1].metrics.values())
    assert_same_results([with_huge[0], with_huge[2]], without)
    for got, want in zip(weights_with[0] + weights_with[2],
                         weights_without[0] + weights_without[1]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_finite_loss_above_the_bound_is_divergence():
    dataset = tiny_dataset()
    bound = 100.0
    climbing = engine_lib.Member("climbing", 8.0, 0.0, 5)  # loss 1.8, 27, 179, ... (finite)
    steady = engine_lib.Member("steady", 4.0, 0.0, 5)  # peaks near 6, then settles
    _, climbing_losses = reference_run(climbing, dataset, BATCH, STEPS)
    _, steady_losses = reference_run(steady, dataset, BATCH, STEPS)
    expected_step = first_bad_step(climbing_losses, bound)
    assert expected_step is not None and np.isfinite(climbing_losses[expected_step])
    assert first_bad_step(steady_losses, bound) is None
    results, _, _ = train([climbing, steady], engine_config(hidden=HIDDEN, l2=L2,
                                                            divergence_loss=bound))
    assert (results[0].status, results[0].diverged_step) == ("diverged", expected_step)
    assert results[1].status == "complete"
    assert results[1].diverged_step is None


def test_non_finite_loss_is_divergence():
    dataset = tiny_dataset()
    huge = engine_lib.Member("huge", 1e4, 0.0, 5)
    _, losses = reference_run(huge, dataset, BATCH, 8)
    expected_step = first_bad_step(losses, float("inf"))
    assert expected_step is not None and not np.isfinite(losses[expected_step])
    results, _, _ = train([huge, MEMBERS[0]], engine_config(
        hidden=HIDDEN, l2=L2, divergence_loss=float("inf")))
    assert (results[0].status, results[0].diverged_step) == ("diverged", expected_step)
    assert results[1].status == "complete"


def test_all_diverged_pack_stops_early():
    chunks = []
    members = [engine_lib.Member("h1", 1e4, 0.0, 5), engine_lib.Member("h2", 3e4, 0.9, 6)]
    results, _, _ = train(members, on_chunk=chunks.append)
    assert all(r.status == "diverged" for r in results)
    assert all(r.steps_done < STEPS for r in results)
    assert chunks[-1].step < STEPS
    assert np.all(chunks[-1].diverged_at >= 0)
    assert np.all(np.isnan(chunks[-1].mean_loss))


def test_bound_below_the_initial_loss_diverges_everyone_at_step_zero():
    # ln(3) ~ 1.1 > 0.5: a finite loss above the bound at the very first step.
    results, _, _ = train(MEMBERS[:2], engine_config(hidden=HIDDEN, l2=L2, divergence_loss=0.5))
    assert [(r.status, r.diverged_step) for r in results] == [("diverged", 0)] * 2


def test_chunk_reports_follow_the_schedule(packed):
    chunks = []
    train(MEMBERS[:1], on_chunk=chunks.append)
    assert [c.step for c in chunks] == [7, 14, 21, 28, 30]
    for chunk in chunks:
        factor = float(schedules.schedule_factor(chunk.step - 1, STEPS))
        assert chunk.effective_lr[0] == pytest.approx(MEMBERS[0].effective_lr * factor)
        assert np.all(np.isfinite(chunk.mean_loss)) and np.all(chunk.diverged_at == -1)


@pytest.mark.parametrize("jit", [False, True])
def test_chunk_reports_time_compute_apart_from_the_runners_trace(jit):
    """Every chunk's compute is timed (compute_s, the progress ETA's measured rate): a new
    runner traces (with XLA: compiles) in a call of no steps before its first chunk,
    reported apart as that chunk's one_off_s; a second pack of the same shape traces
    nothing. The call of no steps trains nothing: the results match a runner that
    traced in its first chunk (the engine before the warm-up)."""
    config = engine_config(hidden=HIDDEN, l2=L2)
    with config.unlocked():
        config.train.jit_compile = str(jit).lower()
    chunks = []
    results, _, engine = train(MEMBERS[:1], config, on_chunk=chunks.append)
    runner = next(iter(engine._runners.values()))
    assert runner.trace_count == 1 and runner.calls == len(chunks)
    assert chunks[0].one_off_s is not None and chunks[0].one_off_s > 0
    assert all(c.one_off_s is None for c in chunks[1:])
    assert all(c.compute_s is not None and c.compute_s > 0 for c in chunks)
    again = []
    engine.train_pack(list(MEMBERS[:1]), BATCH, STEPS, on_chunk=again.append)
    assert len(again) == len(chunks) and runner.trace_count == 1
    assert all(c.compute_s is not None and c.one_off_s is None for c in again)
    # The same pack on an engine whose runner traces in its first chunk with steps.
    cold = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    cold_runner = cold._runner(1, BATCH)
    cold_runner.warm = lambda indices, batch_size: False
    expected = cold.train_pack(list(MEMBERS[:1]), BATCH, STEPS)
    assert cold_runner.trace_count == 1
    assert [r.metrics for r in results] == [r.metrics for r in expected]


@pytest.mark.parametrize("shards", [1, 2])
def test_a_new_runner_traces_its_evaluation_in_its_one_off(shards, monkeypatch):
    """The evaluation's trace is part of a new runner's one-off (before its first chunk),
    not of its pack's end: the ETA prices a plain pack's end by a compiling pack's until
    a plain one has finished. Its evaluations then trace nothing."""
    config = engine_config(hidden=HIDDEN, l2=L2)
    with config.unlocked():
        config.train.member_shards = shards
    engine = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    traced_at = []
    plain_chunk = engine_lib._PackRunner.train_chunk

    def noting(self, indices, num_steps, batch_size):
        if num_steps:  # a chunk with steps: how many evaluation traces were made by then
            traced_at.append(self._eval_batch.experimental_get_tracing_count())
        return plain_chunk(self, indices, num_steps, batch_size)

    monkeypatch.setattr(engine_lib._PackRunner, "train_chunk", noting)
    engine.train_pack(list(MEMBERS[:2]), BATCH, STEPS)
    runner = engine._pack_runner(2, BATCH)
    parts = runner.parts if shards == 2 else [runner]
    assert traced_at and set(traced_at) == {1}  # traced before the first chunk's steps
    assert all(p._eval_batch.experimental_get_tracing_count() == 1 for p in parts)


# -- checkpoints ----------------------------------------------------------------------

class StopAfter:
    """should_stop hook: True at its n-th call."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.n


def test_preempted_pack_resumes_to_the_uninterrupted_result(tmp_path, packed):
    results, weights, _ = packed
    directory = str(tmp_path / "ckpt")
    with pytest.raises(pack_checkpoint.Preempted):
        train(MEMBERS, checkpoint=pack_checkpoint.PackCheckpoint(directory, every_s=1e-9),
              should_stop=StopAfter(2))
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["step"] == 14
    chunks = []
    resumed, resumed_weights, _ = train(
        MEMBERS, checkpoint=pack_checkpoint.PackCheckpoint(directory, every_s=1e-9),
        on_chunk=chunks.append)
    assert [c.step for c in chunks] == [21, 28, 30]  # continued, not restarted
    assert_same_results(resumed, results, rtol=0)
    for got, want in zip(sum(resumed_weights, []), sum(weights, [])):
        np.testing.assert_array_equal(got, want)
    assert not os.path.exists(directory)  # a finished pack clears its checkpoint


def test_checkpoint_of_another_pack_is_ignored(tmp_path):
    directory = str(tmp_path / "ckpt")
    other = [engine_lib.Member("other", 0.3, 0.0, 9)]
    with pytest.raises(pack_checkpoint.Preempted):
        train(other, checkpoint=pack_checkpoint.PackCheckpoint(directory, every_s=1e-9),
              should_stop=StopAfter(3))
    chunks = []
    results, _, _ = train(MEMBERS[:1], checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
                          on_chunk=chunks.append)
    assert chunks[0].step == 7  # trained from the start
    fresh, _, _ = train(MEMBERS[:1])
    assert_same_results(results, fresh, rtol=0)


def test_corrupt_manifest_raises_naming_the_path(tmp_path):
    directory = str(tmp_path / "ckpt")
    with pytest.raises(pack_checkpoint.Preempted):
        train(MEMBERS[:1], checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
              should_stop=StopAfter(1))
    manifest = tmp_path / "ckpt" / "manifest.json"
    manifest.write_text(manifest.read_text()[:20])  # truncated mid-write
    with pytest.raises(pack_checkpoint.CheckpointError, match=str(manifest)):
        train(MEMBERS[:1], checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9))


def test_corrupt_checkpoint_data_raises_naming_the_path(tmp_path):
    directory = tmp_path / "ckpt"
    with pytest.raises(pack_checkpoint.Preempted):
        train(MEMBERS[:1], checkpoint=pack_checkpoint.PackCheckpoint(str(directory), 1e-9),
              should_stop=StopAfter(1))
    data_files = list(directory.glob("step-*/ckpt*.data-*"))
    assert data_files
    for path in data_files:
        path.write_bytes(b"\0" * 7)
    with pytest.raises(pack_checkpoint.CheckpointError, match=str(directory)):
        train(MEMBERS[:1], checkpoint=pack_checkpoint.PackCheckpoint(str(directory), 1e-9))


# -- MirroredStrategy over two logical CPU devices ------------------------------------

_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import numpy as np
    from conftest import engine_config, tiny_dataset
    from tf_sgd_regimes import engine as engine_lib
    import test_engine as t

    out = {}
    config = engine_config(hidden=t.HIDDEN, l2=t.L2)
    runs = {}
    for name, strategy in (("default", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        engine = engine_lib.Engine(config, tiny_dataset(), strategy)
        results = engine.train_pack(list(t.MEMBERS), t.BATCH, t.STEPS)
        runner = engine._runner(len(t.MEMBERS), t.BATCH)
        runs[name] = ([r.metrics for r in results],
                      [[w.tolist() for w in runner.member_weights(k)]
                       for k in range(len(t.MEMBERS))])
        out[name + "_replicas"] = strategy.num_replicas_in_sync
        if name == "mirrored":
            try:
                engine.train_pack(list(t.MEMBERS[:1]), 5, 4)
                out["refused"] = ""
            except ValueError as e:
                out["refused"] = str(e)
    out["runs"] = runs
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_mirrored_strategy_matches_default_strategy():
    done = run_python(_MIRRORED_SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    assert (out["default_replicas"], out["mirrored_replicas"]) == (1, 2)
    default_metrics, default_weights = out["runs"]["default"]
    mirrored_metrics, mirrored_weights = out["runs"]["mirrored"]
    for a, b in zip(default_metrics, mirrored_metrics):
        assert set(a) == set(b)
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), name
    for member_a, member_b in zip(default_weights, mirrored_weights):
        for a, b in zip(member_a, member_b):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)
    assert "config.sweep.batch_sizes" in out["refused"] and "5" in out["refused"]


def test_one_offs_predict_the_traces_and_compiles_tensorflow_makes():
    """Engine.one_offs (the progress ETA's prices of the packs to come) against the traces
    TensorFlow counts: with jit_compile="auto" the MLP compiles with XLA at B <= 4 (one
    runner, one compilation per pack shape), and without XLA one runner serves every B,
    traced once for all of them; a new member count is a new runner. The prediction is
    made before any pack trains and again halfway."""
    config = engine_config(hidden=HIDDEN, l2=L2)
    config.unlock()
    config.train.jit_compile = "auto"
    config.lock()
    engine = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    packs = [(2, 16), (2, 1), (2, 8), (2, 4), (2, 12), (2, 1), (3, 8), (2, 2), (3, 16)]
    predicted = engine.one_offs(packs)
    assert predicted == ["trace", "compile", None, "compile", None, None, "trace",
                         "compile", None]
    actual = []
    for index, (members, batch_size) in enumerate(packs):
        if index == 4:
            assert engine.one_offs(packs[4:]) == predicted[4:]
        before = {key: runner._train_chunk.experimental_get_tracing_count()
                  for key, runner in engine._runners.items()}
        engine.train_pack(list(MEMBERS[:members]), batch_size, 8)
        traced = [key for key, runner in engine._runners.items()
                  if runner._train_chunk.experimental_get_tracing_count() > before.get(key, 0)]
        assert len(traced) <= 1
        actual.append(None if not traced else "compile" if traced[0][2] else "trace")
    assert actual == predicted

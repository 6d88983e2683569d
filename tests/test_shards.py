"""Packs trained in shards side by side (shards.Shards, config.train.member_shards): the
same members' results as the whole pack, for every model family that can shard, through
preemption, the noise probe and the ETA's trace predictions."""

import textwrap
import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import engine_config, pack_weights, tiny_dataset
from test_engine import StopAfter
from test_engine_xla import tiny_pack_config, tiny_pack_dataset, xla_compiles
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import models
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes import shards as shards_lib

MEMBERS = [engine_lib.Member("sgd_a", 0.5, 0.0, 0), engine_lib.Member("mom_b", 0.25, 0.9, 1),
           engine_lib.Member("mom_c", 1.0, 0.9, 2), engine_lib.Member("sgd_d", 0.1, 0.0, 3),
           engine_lib.Member("mom_e", 0.05, 0.9, 4)]
BATCH, STEPS = 6, 30


def _config(shards, base=None, **fields):
    config = base if base is not None else engine_config(hidden=(8,), l2=1e-3)
    config.unlock()
    config.train.member_shards = shards
    for name, value in fields.items():
        config.train[name] = value
    config.lock()
    return config


def _train(config, dataset, members=MEMBERS, batch_size=BATCH, steps=STEPS, **kwargs):
    engine = engine_lib.Engine(config, dataset, tf.distribute.get_strategy())
    results = engine.train_pack(list(members), batch_size, steps, **kwargs)
    return results, pack_weights(engine, len(members), batch_size), engine


def _assert_close(a, b, weights_a, weights_b, rtol=1e-5):
    assert [(r.cell_id, r.status, r.diverged_step, r.steps_done) for r in a] == \
        [(r.cell_id, r.status, r.diverged_step, r.steps_done) for r in b]
    for x, y in zip(a, b):
        for name, value in x.metrics.items():
            if value is None:
                assert y.metrics[name] is None
            else:
                assert y.metrics[name] == pytest.approx(value, rel=rtol, abs=1e-6), name
    for mine, theirs in zip(weights_a, weights_b):
        for u, v in zip(mine, theirs):
            np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-6)


def test_auto_is_one_shard_per_core_where_kernels_run_on_one_thread(monkeypatch):
    dataset = tiny_dataset()
    strategy = tf.distribute.get_strategy()
    sampler = engine_lib.make_sampler(dataset, strategy, engine_config())
    monkeypatch.setattr(shards_lib.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    one_thread = _config(0, intra_op_threads=1)
    assert shards_lib.member_shards(one_thread, strategy, sampler, 78) == 4
    assert shards_lib.member_shards(one_thread, strategy, sampler, 3) == 3  # one per member
    assert shards_lib.member_shards(_config(0, intra_op_threads=0), strategy, sampler, 78) == 1
    assert shards_lib.member_shards(_config(3, intra_op_threads=0), strategy, sampler, 78) == 3


@pytest.mark.parametrize("value", [-1, True, "2"])
def test_a_bad_shard_count_names_the_field(value):
    config = engine_config()
    config.unlock()
    with config.ignore_type():
        config.train.member_shards = value
    config.lock()
    with pytest.raises(ValueError, match="config.train.member_shards"):
        engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy()).train_pack(
            MEMBERS[:2], BATCH, 4)


def test_shards_are_refused_where_they_cannot_run():
    # A language model's batches stream inside the step (StreamSampler): the shards would
    # share its state.
    name = "small_lstm_lm"
    config = tiny_pack_config(name, jit=False)
    config.train.member_shards = 2
    dataset = tiny_pack_dataset(name, 2)
    engine = engine_lib.Engine(config, dataset, tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="config.train.member_shards=2"):
        engine.train_pack(MEMBERS[:2], 2, 2)
    # Auto there is one shard, whatever the threads.
    config.train.member_shards, config.train.intra_op_threads = 0, 1
    assert shards_lib.member_shards(config, engine.strategy, engine.sampler, 2) == 1


def test_uneven_shards_give_the_whole_packs_results_and_run_on_threads(monkeypatch):
    dataset = tiny_dataset()
    whole = _train(_config(1), dataset)
    threads = set()
    plain = engine_lib._PackRunner.train_chunk

    def noting(self, indices, num_steps, batch_size):
        threads.add(threading.current_thread().name.split("_")[0])
        return plain(self, indices, num_steps, batch_size)

    monkeypatch.setattr(engine_lib._PackRunner, "train_chunk", noting)
    sharded = _train(_config(2), dataset)  # 3 + 2 members
    assert isinstance(sharded[2]._pack_runner(5, BATCH), shards_lib.Shards)
    assert [p.num_members for p in sharded[2]._pack_runner(5, BATCH).parts] == [3, 2]
    assert "pack-shard" in threads  # chunks ran on the shards' threads
    _assert_close(whole[0], sharded[0], whole[1], sharded[1])


def _registry_cases():
    # Every family whose batches are drawn on the host (ShuffleSampler) can shard.
    return [name for name in models.names() if models.TASKS[name] != "language_model"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _registry_cases())
def test_every_model_family_trains_the_same_in_shards(name):
    # Batch norm's moving statistics, convolutions, autoencoders: every state a shard
    # holds comes back in order. Two members in two shards against one pack of two.
    batch = 4
    members = [engine_lib.Member("a", 0.05, 0.9, 0), engine_lib.Member("b", 0.02, 0.0, 1)]
    dataset = tiny_pack_dataset(name, batch)
    runs = []
    for shards in (1, 2):
        config = tiny_pack_config(name, jit=False)
        config.train.member_shards = shards
        engine = engine_lib.Engine(config, dataset, tf.distribute.get_strategy())
        results = engine.train_pack(members, batch, 4)
        runner = engine._pack_runner(len(members), batch)
        assert isinstance(runner, shards_lib.Shards) == (shards == 2)
        states = [v.numpy() for v in runner.view().states]
        runs.append((results, [runner.member_weights(k) for k in range(2)], states))
    (a, wa, sa), (b, wb, sb) = runs
    _assert_close(a, b, wa, wb, rtol=1e-4)
    for u, v in zip(sa, sb):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_a_sharded_pack_resumes_bit_for_bit_and_under_another_shard_count(tmp_path):
    dataset = tiny_dataset()
    uninterrupted = _train(_config(2), dataset)
    directory = str(tmp_path / "ckpt")
    with pytest.raises(pack_checkpoint.Preempted):
        _train(_config(2), dataset, checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
               should_stop=StopAfter(2))
    chunks = []
    resumed = _train(_config(2), dataset,
                     checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
                     on_chunk=chunks.append)
    assert chunks[0].step == 21  # continued from step 14, not restarted
    _assert_close(uninterrupted[0], resumed[0], uninterrupted[1], resumed[1], rtol=0)
    # The checkpoint holds the whole pack: written by two shards, read by one (and back).
    with pytest.raises(pack_checkpoint.Preempted):
        _train(_config(2), dataset, checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
               should_stop=StopAfter(2))
    chunks = []
    one = _train(_config(1), dataset, checkpoint=pack_checkpoint.PackCheckpoint(directory, 1e-9),
                 on_chunk=chunks.append)
    assert chunks[0].step == 21
    _assert_close(uninterrupted[0], one[0], uninterrupted[1], one[1])


def test_the_noise_probe_reads_the_whole_pack_in_shards():
    dataset = tiny_dataset(num_train=64)
    probes = []
    for shards in (1, 2):
        config = _config(shards)
        config.unlock()
        config.train.noise_scale.enabled = True
        config.train.noise_scale.batch_small = 4
        config.train.noise_scale.batch_big = 16
        config.train.noise_scale.num_batches = 2
        config.lock()
        results, _, _ = _train(config, dataset, batch_size=8, steps=10)
        probes.append([(r.metrics.get("noise_scale_init"), r.metrics.get("noise_scale_mid"))
                       for r in results])
    assert all(init is not None for init, _ in probes[0])
    for (i1, m1), (i2, m2) in zip(*probes):
        assert i2 == pytest.approx(i1, rel=1e-4)
        assert (m1 is None) == (m2 is None)
        if m1 is not None:
            assert m2 == pytest.approx(m1, rel=1e-3)


def _functions(engine):
    """The engine's chunk functions (the tf.functions, a shared one once) by runner key."""
    functions = {}
    for key, runner in engine._runners.items():
        function = getattr(runner._train_chunk, "function", runner._train_chunk)
        functions.setdefault(id(function), (key, function))
    return dict(functions.values())


def test_one_offs_predict_each_shards_trace():
    # Shards of one shape share one trace; the ETA's prediction counts the pack once.
    config = _config(2, jit_compile="auto")
    engine = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    packs = [(4, 16), (4, 2), (4, 8), (5, 8), (4, 2), (6, 8)]
    predicted = engine.one_offs(packs)
    assert predicted == ["trace", "compile", None, "trace", None, None]
    actual = []
    # 2 + 2 trace once (one shape); 3 + 2 after them, only the new shape; 3 + 3, nothing
    # (its second shard is a new runner of a shape traced before).
    traces_made = iter([1, 1, 0, 1, 0, 0])
    for members, batch_size in packs:
        before = {key: f.experimental_get_tracing_count()
                  for key, f in _functions(engine).items()}
        engine.train_pack(MEMBERS[:members] if members <= 5 else MEMBERS + MEMBERS[:1],
                          batch_size, 8)
        traced = [key for key, f in _functions(engine).items()
                  if f.experimental_get_tracing_count() > before.get(key, 0)]
        assert sum(f.experimental_get_tracing_count() - before.get(key, 0)
                   for key, f in _functions(engine).items()) == next(traces_made)
        actual.append(None if not traced else "compile" if traced[0][2] else "trace")
    assert actual == predicted
    # Runners: shards 0 and 1 of two members (without XLA and with), shards 0 and 1 of
    # three (3 + 2, then 3 + 3): each holds its own variables.
    assert sorted(key[0] for key in engine._runners) == [2, 2, 2, 2, 3, 3]


@pytest.mark.parametrize("jit", ["false", "true"])
def test_shards_of_one_shape_share_one_trace_and_train_their_own_members(jit):
    # Four members in two shards of two: one function, traced once, called with each
    # shard's variables; the members come out as the whole pack trains them.
    dataset = tiny_dataset()
    members = MEMBERS[:4]
    whole = _train(_config(1, jit_compile=jit), dataset, members=members)
    sharded = _train(_config(2, jit_compile=jit), dataset, members=members)
    runner = sharded[2]._pack_runner(4, BATCH)
    assert [p.num_members for p in runner.parts] == [2, 2]
    first, second = runner.parts
    assert first._train_chunk.function is second._train_chunk.function
    assert first._train_chunk.experimental_get_tracing_count() == 1
    assert runner.trace_count == 1 and first.trace_count == second.trace_count == 1
    assert first._eval_batch.function is second._eval_batch.function
    # Each shard's own variables, not the first shard's: the halves differ.
    assert not np.allclose(first.weights[0].numpy(), second.weights[0].numpy())
    _assert_close(whole[0], sharded[0], whole[1], sharded[1], rtol=1e-4)


_SHARED_COMPILES_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    import tensorflow as tf
    from conftest import engine_config, tiny_dataset
    from tf_sgd_regimes import engine as engine_lib, experiments

    config = engine_config(steps_per_call=4)
    config.unlock()
    config = experiments.apply_overrides(
        config, ["train.jit_compile=true", "train.member_shards=2"])
    trainer = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    members = [engine_lib.Member(f"m{k}", 0.1 * (k + 1), 0.9, k) for k in range(4)]
    for steps in (10, 7):  # two packs of two shards of two, B = 6
        trainer.train_pack(members, 6, steps)
    print("RUNNERS", len(trainer._runners), flush=True)
""")


@pytest.mark.slow
def test_shards_of_one_shape_compile_once_under_xla():
    stdout, per_function = xla_compiles(_SHARED_COMPILES_SCRIPT, "train")
    assert "RUNNERS 2" in stdout  # two shards, each its own runner and variables
    # One function for both shards, compiled once for both, across two packs.
    assert list(per_function.values()) == [1], per_function

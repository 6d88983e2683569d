"""The subprocess behind tests/test_multi_replica*.py: each file runs some families.

One subprocess sets up 4 logical CPU devices before TensorFlow starts them and runs
everything under the default strategy (1 replica) and MirroredStrategy over 2 and 4
devices: a tiny pack of 2 members per family (a few steps over two chunks, then
evaluation) and, with `extras`, the ghost-BN layer on its own and several sweeps one after
another under the same strategy (a notebook). The families are split over two test files
so that pytest-xdist (`--dist loadfile`) runs them on both workers: the ResNet-50 on 4
replicas alone takes a third of the whole (its ghost groups span replicas, so every batch
norm all-reduces inside the forward pass).
"""

import json
import textwrap

import pytest

from conftest import run_python

# Every family of the engine's model registry, as the multi-replica tests configure it.
FAMILIES = ("mlp", "small_cnn", "wrn_ghost_bn", "wrn_regularized_skipinit", "resnet50",
            "lstm_lm", "autoencoder")
REPLICAS = (1, 2, 4)

_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    sys.path.insert(0, "tests")
    from conftest import shrunk_config, tiny_dataset
    from tf_sgd_regimes import data as data_registry, engine as engine_lib, experiments
    from tf_sgd_regimes import strategy as strategy_lib
    from tf_sgd_regimes.data import base
    from tf_sgd_regimes.models import layers
    from tf_sgd_regimes.sweep import loop as sweep

    def strategy_of(replicas):
        if replicas == 1:
            return tf.distribute.get_strategy()
        return strategy_lib.mirrored([f"/cpu:{i}" for i in range(replicas)])

    def images(shape, classes, seed=0):
        rng = np.random.default_rng(seed)
        def draw(n):
            return (rng.normal(size=(n,) + shape).astype(np.float32),
                    rng.integers(0, classes, n).astype(np.int32))
        (tx, ty), (vx, vy) = draw(48), draw(20)
        return base.Dataset(name="images", task="classification", train_x=tx, train_y=ty,
                            test_x=vx, test_y=vy, num_outputs=classes, input_shape=shape)

    def vectors(width, seed=0):
        rng = np.random.default_rng(seed)
        tx, vx = (rng.uniform(size=(n, width)).astype(np.float32) for n in (48, 20))
        return base.Dataset(name="vectors", task="autoencoder", train_x=tx, train_y=None,
                            test_x=vx, test_y=None, num_outputs=width, input_shape=(width,))

    language = data_registry.get_dataset("synthetic_language", vocab_size=11,
                                         num_train_tokens=400, num_test_tokens=200, unroll=5)
    # family: (data set, config.model, config overrides, learning rates of the 2 members)
    CASES = {
        "mlp": (tiny_dataset(num_train=48), dict(name="mlp", hidden=(8,)), {}, (0.5, 64.0)),
        "small_cnn": (images((8, 8, 1), 10), dict(name="small_cnn", filters=(4, 8)), {},
                      (0.5, 64.0)),
        # Ghost 4 of B = 16: whole groups on every replica (resnet50 spans replicas).
        "wrn_ghost_bn": (images((8, 8, 3), 10), dict(name="wide_resnet", depth=10, width=1,
                         normalization="batch_norm", ghost_batch_size=4), {}, (0.5, 64.0)),
        # With its dropout (0.2): masks are drawn for the global batch.
        "wrn_regularized_skipinit": (images((8, 8, 3), 10), dict(
            name="wide_resnet", depth=10, width=1, normalization="skipinit"),
            {"l2_scope": "all"}, (0.5, 64.0)),
        # Ghost 8 of B = 16: local groups on 2 replicas, groups spanning replicas on 4.
        "resnet50": (images((16, 16, 3), 10), dict(name="resnet50", stage_blocks=(1, 1, 1, 1),
                     base_width=4, ghost_batch_size=8), {}, (0.5, 64.0)),
        "lstm_lm": (language, dict(name="lstm_lm", embedding_size=6, units=7, num_layers=2,
                    dropout_rate=0.3),
                    {"train.clip_grad_norm": 0.5, "train.divergence_loss": 100.0},
                    (1.0, 300.0)),  # the loss is summed over the 5 unrolled steps
        "autoencoder": (vectors(12), dict(name="autoencoder", widths=(6, 2)),
                        {"l2": 1e-5}, (0.5, 64.0)),
    }

    def config_for(model, overrides):
        config = shrunk_config(lock=False)
        config.model = model
        config.l2 = 5e-4
        config.train.steps_per_call = 3
        config.train.divergence_loss = 10.0
        config.train.eval_batch_size = 8
        # Like for like: "auto" would compile the one-device CNN with XLA where oneDNN is
        # off (engine.XLA_AUTO_MAX_BATCH_WITHOUT_ONEDNN) but never the replicas.
        config.train.jit_compile = "false"
        for key, value in overrides.items():
            node, *path = key.split(".")
            target = config
            for part in [node] + path[:-1]:
                target = getattr(target, part) if path else target
            setattr(target if path else config, (path or [node])[-1], value)
        return config

    FAMILIES, EXTRAS = __FAMILIES__, __EXTRAS__
    out = {"families": {}, "notebook": {}, "ghost": {}}
    for name in FAMILIES:
        dataset, model, overrides, lrs = CASES[name]
        config = config_for(model, overrides)
        members = [engine_lib.Member(f"c{k}", lr, 0.9, seed=k) for k, lr in enumerate(lrs)]
        for replicas in (1, 2, 4):
            engine = engine_lib.Engine(config, dataset, strategy_of(replicas))
            started = time.time()
            results = engine.train_pack(members, 16, 6)
            print(name, replicas, round(time.time() - started, 1), file=sys.stderr, flush=True)
            out["families"].setdefault(name, {})[str(replicas)] = [
                dict(status=r.status, diverged_step=r.diverged_step, metrics=r.metrics)
                for r in results]
        if name == "resnet50":  # a global batch 4 replicas cannot share out evenly
            try:
                engine.train_pack(members, 18, 2)
                out["refused"] = ""
            except ValueError as e:
                out["refused"] = str(e)

    # The ghost-BN layer and a notebook of sweeps: once, in one of the files.
    if EXTRAS:
        # The ghost-BN layer: B = 16, ghost 16 on 2 replicas against one device.
        x = np.random.default_rng(3).normal(2.0, 3.0, size=(16, 4, 4, 3)).astype(np.float32)
        upstream = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)

        def run_layer(strategy):
            with strategy.scope():
                bn = layers.GhostBatchNormalization(ghost_batch_size=16, momentum=0.5)
                bn.build(x.shape)
            replicas = strategy.num_replicas_in_sync
            local = len(x) // replicas

            @tf.function
            def step():
                def replica_fn():
                    r = tf.distribute.get_replica_context().replica_id_in_sync_group
                    xr = tf.constant(x)[r * local:(r + 1) * local]
                    ur = tf.constant(upstream)[r * local:(r + 1) * local]
                    with tf.GradientTape() as tape:
                        tape.watch(xr)
                        y = bn(xr, training=True)
                        loss = tf.reduce_sum(y * ur)
                    dx, dgamma = tape.gradient(loss, [xr, bn.gamma])
                    return y, dx, tf.distribute.get_replica_context().all_reduce("sum", dgamma)
                return strategy.run(replica_fn)

            y, dx, dgamma = step()
            cat = lambda t: np.concatenate([v.numpy() for v in
                                            strategy.experimental_local_results(t)])
            first = lambda t: strategy.experimental_local_results(t)[0].numpy()
            return dict(y=cat(y).tolist(), dx=cat(dx).tolist(), dgamma=first(dgamma).tolist(),
                        moving_mean=np.asarray(bn.moving_mean.value).tolist(),
                        moving_variance=np.asarray(bn.moving_variance.value).tolist())

        out["ghost"] = {str(r): run_layer(strategy_of(r)) for r in (1, 2)}

        # A notebook: several sweeps one after another in one process, each asking for
        # config.strategy=mirrored (all 4 devices): the same strategy must come back, as a
        # second MirroredStrategy over the same devices would reuse collective keys. The WRN's
        # B = 16 with ghost 16 puts each ghost group on 4 replicas.
        import tempfile, os
        workdir = tempfile.mkdtemp()
        for experiment, extra in (
                ("digits_wrn_epoch_budget", ["sweep.batch_sizes=(16,)", "budget.epochs=0.05"]),
                ("synthetic_lstm_epoch_budget", ["sweep.batch_sizes=(8,)", "budget.epochs=1.0",
                                                  "data.num_train_tokens=600",
                                                  "data.num_test_tokens=1000"]),
                ("digits_cnn_epoch_budget", ["sweep.batch_sizes=(16,)", "budget.epochs=0.1"])):
            config = experiments.get_config(experiment)
            config = experiments.apply_overrides(config, extra + [
                "sweep.optimizers=('momentum',)", "sweep.seeds=(0,)", "analysis.best_k=1",
                "analysis.num_seeds=1", "train.noise_scale.enabled=False",
                "sweep.extend_edges.enabled=False", "sweep.effective_lrs=(0.5,)",
                "strategy=mirrored"])
            records = sweep.Sweep(config, os.path.join(workdir, experiment),
                                  progress_interval_s=1e9).run()
            out["notebook_replicas"] = strategy_lib.get_strategy("mirrored").num_replicas_in_sync
            out["notebook"][experiment] = [(r["status"], (r.get("error") or "")[:500])
                                           for r in records]
    print("RESULT" + json.dumps(out))
""")


def run(families, extras: bool) -> dict:
    """Runs `families` (and with `extras` the ghost layer and the notebook) in a fresh
    interpreter; returns what the script recorded."""
    unknown = set(families) - set(FAMILIES)
    assert not unknown, unknown
    code = (_SCRIPT.replace("__FAMILIES__", repr(tuple(families)))
            .replace("__EXTRAS__", repr(bool(extras))))
    done = run_python(code, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def check_family(by_replicas: dict) -> None:
    """The family's statuses, divergence steps and metrics on 2 and 4 replicas are the
    one-device run's."""
    reference = by_replicas["1"]
    assert any(r["status"] == "complete" for r in reference)  # something to compare
    for replicas in ("2", "4"):
        for ref, got in zip(reference, by_replicas[replicas]):
            assert (got["status"], got["diverged_step"]) == (ref["status"],
                                                             ref["diverged_step"]), replicas
            for metric, value in ref["metrics"].items():
                if value is not None:
                    assert got["metrics"][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), (
                        replicas, metric)

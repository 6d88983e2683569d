"""The packed step under XLA: it compiles once per shape, and every model family compiles.

XLA is what a TPU runs, so these run the CPU's XLA backend on tiny configs of every model
in the registry and compare each packed step with the same step without XLA.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import models
from tf_sgd_regimes.configs import common
from tf_sgd_regimes.data import base


def tiny_pack_dataset(name, batch_size, count=12):
    """Random data shaped for the registry model `name`'s tiny configuration."""
    tiny = models.tiny_config(name)
    shape, outputs, task = tuple(tiny["input_shape"]), tiny["num_outputs"], models.TASKS[name]
    rng = np.random.default_rng(0)
    if task == "language_model":
        tokens = rng.integers(0, outputs, size=batch_size * shape[0] * 4 + 1).astype(np.int32)
        return base.Dataset(name, task, tokens, None, tokens[: 8 * shape[0] + 2],
                            None, outputs, shape, ordering="streams", unroll=shape[0])
    if task == "autoencoder":
        x = rng.uniform(size=(count,) + shape).astype(np.float32)
        return base.Dataset(name, task, x, None, x[:5], None, outputs, shape)
    x = rng.standard_normal((count,) + shape).astype(np.float32)
    y = rng.integers(0, outputs, size=count).astype(np.int32)
    return base.Dataset(name, task, x, y, x[:5], y[:5], outputs, shape)


def tiny_pack_config(name, jit, steps_per_call=2, eval_batch_size=4):
    tiny = models.tiny_config(name)
    config = common.base_config()
    fields = dict(tiny["fields"])
    fields.pop("batch_size", None)  # the engine sets a language model's batch
    if name in ("small_wrn", "wide_resnet", "lstm_lm", "small_lstm_lm"):
        # XLA draws other dropout masks from the same seeds (another random-number
        # algorithm), so the step-for-step comparison runs without dropout.
        fields["dropout_rate"] = 0.0
    config.model = dict(name=name, **fields)
    config.l2 = 1e-3
    config.train.steps_per_call = steps_per_call
    config.train.eval_batch_size = eval_batch_size
    with config.ignore_type():  # "auto" (a str) by default
        config.train.jit_compile = jit
    config.train.clip_grad_norm = 1.0 if models.TASKS[name] == "language_model" else 0.0
    return config


MEMBERS = [engine_lib.Member("a", 0.05, 0.9, 0), engine_lib.Member("b", 0.02, 0.0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_every_model_family_packed_step_compiles_under_xla_and_matches(name, monkeypatch):
    """Also: the XLA runner compiles in a call of no steps before its first chunk (the
    ETA's one-off, _PackRunner.warm) and the runner without XLA traces in its first
    chunk, so a warm-up call that trained (carried LSTM state, batch norm) would part
    them."""
    batch = 4  # batch norm over 2 examples would amplify round-off past any tolerance
    dataset = tiny_pack_dataset(name, batch)
    # A language model's pack of several members has no XLA form (the vectorised LSTM
    # loop): the engine says so before compiling; a pack of one (how the paper's LSTM
    # trains) compiles.
    recurrent = models.TASKS[name] == "language_model"
    members = MEMBERS[:1] if recurrent else MEMBERS
    if recurrent:
        trainer = engine_lib.Engine(tiny_pack_config(name, True), dataset,
                                    tf.distribute.get_strategy())
        with pytest.raises(ValueError, match=r"config\.train\.jit_compile"):
            trainer.train_pack(MEMBERS, batch, 3)
    weights = {}
    for jit in (False, True):
        trainer = engine_lib.Engine(tiny_pack_config(name, jit), dataset,
                                    tf.distribute.get_strategy())
        assert trainer.jit_compile is jit
        if not jit:
            monkeypatch.setattr(engine_lib._PackRunner, "warm", lambda *args: False)
        chunks = []
        results = trainer.train_pack(members, batch, 3,  # chunks of 2 and 1 steps
                                     on_chunk=chunks.append)
        monkeypatch.undo()
        assert (chunks[0].one_off_s is not None) is jit
        assert all(r.status == "complete" for r in results), [r.status for r in results]
        runner = trainer._runner(len(members), batch)
        weights[jit] = [runner.member_weights(k) for k in range(len(members))]
        if jit:
            assert runner._train_chunk.experimental_get_tracing_count() == 1
    for member_off, member_on in zip(weights[False], weights[True]):
        for off, on in zip(member_off, member_on):
            np.testing.assert_allclose(on, off, rtol=2e-4, atol=2e-5)


_COMPILES_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "tests")
    import tensorflow as tf
    from conftest import engine_config, tiny_dataset
    from tf_sgd_regimes import engine as engine_lib

    from tf_sgd_regimes import experiments
    config = engine_config(steps_per_call=4)
    config.unlock()
    config = experiments.apply_overrides(config, ["train.jit_compile=true"])
    trainer = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    members = [engine_lib.Member(f"m{k}", 0.1 * (k + 1), 0.9, k) for k in range(3)]
    # B = 6: 10 steps are chunks of 4, 4 and 2 steps; a second pack at the same shapes;
    # then B = 5 (a new shape), then B = 6 again.
    for batch, steps in ((6, 10), (6, 7), (5, 9), (6, 5)):
        trainer.train_pack(members, batch, steps)
        print("PACK", batch, flush=True)
    traces = {b: trainer._runner(3, b)._train_chunk.experimental_get_tracing_count()
              for b in (5, 6)}
    print("RESULT" + json.dumps(traces), flush=True)
""")


def xla_compiles(script, pattern):
    """Runs `script` in a fresh Python; (its stdout, {function matching `pattern`: times
    XLA compiled it}). TF logs every XLA compilation of a function at VLOG 1 of its
    compilation profiler: "Compiled <function> N times"."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               TF_CPP_VMODULE="device_compilation_profiler=1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    compiles = re.findall(r"Compiled (\S*%s\S*) (\d+) times" % pattern, done.stderr)
    assert compiles, done.stderr[-3000:]  # the log line exists: the counts mean it
    per_function = {}
    for function, count in compiles:
        per_function[function] = max(per_function.get(function, 0), int(count))
    return done.stdout, per_function


@pytest.mark.slow
def test_xla_compiles_the_chunk_once_per_shape():
    stdout, per_function = xla_compiles(_COMPILES_SCRIPT, "train_chunk")
    result = [x for x in stdout.splitlines() if x.startswith("RESULT")][-1]
    assert json.loads(result[len("RESULT"):]) == {"5": 1, "6": 1}  # one trace per runner
    # Two runners (B = 5 and B = 6), each its own function, each compiled exactly once,
    # across packs, chunk lengths 4, 2, 3 and 1 and a return to B = 6.
    assert sorted(per_function.values()) == [1, 1], per_function

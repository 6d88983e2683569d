"""The subprocess behind tests/test_multi_replica_xla*.py, and the checks of its results.

XLA (jit_compile=True, the TPU's compiler) under MirroredStrategy: every model family of the
registry trains on 2 logical CPU replicas, compiled, and gives the one-device result; each
compiled part compiles once per shape; a diverged member leaves the others' weights alone.

The engine compiles each replica's step in two parts split at its all-reduce (TF 2.21
compiles no collective on CPU); see engine._PackRunner.split_xla. One subprocess sets up 2
logical CPU devices and, with TF's compilation profiler logging every XLA compilation
("Compiled <function> N times"), trains each family's tiny configuration for 3 steps
(chunks of 2 and 1) twice (a second pack reuses the compiled parts), on one device without
XLA and on 2 replicas with it; models with dropout also on one device with XLA, whose
random numbers differ from the kernels' without XLA. Packs of two members, so the
convnets run their grouped convolutions (member_map.grouped_conv2d); the language models
train packs of one (their packs of several have no XLA form).

Then every packed family trains, on 2 replicas with XLA and with the same compiled parts,
a pack of a calm member and the checked member, and the same pack with the calm member
replaced by one whose learning rate diverges to inf/NaN: the checked member must end with
the same weights and metrics. (XLA's CPU kernel gradient of a grouped convolution
multiplied zero holes with the other members' values, 0 x NaN = NaN: a Regularized
SkipInit member then poisoned the other member's kernels; member_map._xla_grouped_conv.)

The registry's families are split over two test files (the convnets, and the rest with the
refusal) so that pytest-xdist (`--dist loadfile`) runs them on both workers.
"""

import json
import re
import textwrap

import numpy as np
import pytest

from conftest import run_python
from tf_sgd_regimes import models

# Every family of the registry, so that a new family is covered without editing a test.
FAMILIES = list(models.names())
CONVNETS = [name for name in FAMILIES if name in ("small_cnn", "small_wrn", "wide_resnet",
                                                 "resnet50")]
BATCH = 8  # 4 examples a replica; ghost groups of 4 stay on one replica

_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    from test_engine_xla import tiny_pack_config, tiny_pack_dataset
    from tf_sgd_regimes import engine as engine_lib, models, strategy as strategy_lib

    BATCH = __BATCH__
    mirrored = strategy_lib.mirrored(["/cpu:0", "/cpu:1"])
    one = tf.distribute.get_strategy()
    members = [engine_lib.Member("a", 0.05, 0.9, 0), engine_lib.Member("b", 0.02, 0.0, 1)]

    def config_for(name, jit):
        config = tiny_pack_config(name, jit, eval_batch_size=4)
        model = dict(config.model)
        if name in ("wide_resnet", "resnet50"):
            model["ghost_batch_size"] = 4
        if name in ("small_wrn", "lstm_lm"):  # dropout drawn for the global batch, compiled
            model["dropout_rate"] = 0.2
        config.model = model
        return config

    # A member whose learning rate sends its weights to inf/NaN within a few steps.
    BAD_LR = 1e30
    out = {}
    for name in __FAMILIES__:
        recurrent = models.TASKS[name] == "language_model"
        pack = members[:1] if recurrent else members
        dataset = tiny_pack_dataset(name, BATCH)
        runs = [("one", one, False), ("two_xla", mirrored, True)]
        if name in ("small_wrn", "lstm_lm"):  # dropout: XLA's random numbers differ
            runs.append(("one_xla", one, True))
        out[name] = {}
        for label, strategy, jit in runs:
            trainer = engine_lib.Engine(config_for(name, jit), dataset, strategy)
            trainer.train_pack(pack, BATCH, 3)  # a first pack: the compiled parts are reused
            results = trainer.train_pack(pack, BATCH, 3)
            runner = trainer._runner(len(pack), BATCH)
            out[name][label] = dict(
                status=[r.status for r in results],
                metrics=[r.metrics for r in results],
                weights=[[w.tolist() for w in runner.member_weights(k)]
                         for k in range(len(pack))],
                split=bool(runner.split_xla), parts=sorted({k[0] for k in runner._compiled}))
            if label == "two_xla" and not recurrent:
                # The checked member "b" beside a calm member, then beside a diverging one.
                checked = {}
                for partner in ("calm", "bad"):
                    lr = 0.05 if partner == "calm" else BAD_LR
                    first = engine_lib.Member(partner, lr, 0.9, 0)
                    results = trainer.train_pack([first, members[1]], BATCH, 6)
                    weights = runner.member_weights(1)
                    checked[partner] = dict(
                        status=[r.status for r in results], metrics=results[1].metrics,
                        weights=[w.tolist() for w in weights],
                        partner_finite=bool(all(np.all(np.isfinite(w))
                                                for w in runner.member_weights(0))))
                out[name]["beside"] = checked
        print(name, "done", file=sys.stderr, flush=True)

    if __REFUSAL__:
        # Ghost groups spanning replicas all-reduce inside the forward pass: refused under XLA.
        config = tiny_pack_config("wide_resnet", True)
        config.model = dict(config.model, ghost_batch_size=8)
        try:
            engine_lib.Engine(config, tiny_pack_dataset("wide_resnet", BATCH), mirrored).train_pack(
                members, BATCH, 3)
            out["refused"] = ""
        except ValueError as e:
            out["refused"] = str(e)
    print("RESULT" + json.dumps(out), flush=True)
""")


def run(families, refusal: bool):
    """(results, stderr) of the script for `families` (with `refusal`: the layout refused)."""
    code = (_SCRIPT.replace("__BATCH__", str(BATCH))
            .replace("__FAMILIES__", repr(list(families)))
            .replace("__REFUSAL__", repr(bool(refusal))))
    # TF logs every XLA compilation of a function at VLOG 1 of its compilation profiler.
    done = run_python(code, timeout=1800, env_extra=dict(
        TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_compilation_profiler=1"))
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):]), done.stderr


def check_family_matches_one_device(got: dict) -> None:
    """On 2 replicas with XLA the family's statuses, weights and metrics are one device's
    (with XLA where dropout's random numbers are XLA's)."""
    two = got["two_xla"]
    assert two["split"] and two["parts"] == ["eval", "gradients", "update"]
    reference = got["one_xla"] if "one_xla" in got else got["one"]
    assert two["status"] == reference["status"]
    assert all(status == "complete" for status in two["status"])
    for member_two, member_ref in zip(two["weights"], reference["weights"]):
        for w_two, w_ref in zip(member_two, member_ref):
            np.testing.assert_allclose(np.array(w_two), np.array(w_ref), rtol=2e-4, atol=2e-5)
    for m_two, m_ref in zip(two["metrics"], reference["metrics"]):
        for metric, value in m_ref.items():
            assert m_two[metric] == pytest.approx(value, rel=1e-4, abs=1e-6), metric


def check_compiled_once_per_shape(stderr: str, families) -> None:
    """Each compiled part of each family compiled once, in every later pack too."""
    compiles = re.findall(r"Compiled (\S+) (\d+) times", stderr)
    counts = {}
    for function, count in compiles:
        counts[function] = max(counts.get(function, 0), int(count))
    parts = {f: c for f, c in counts.items()
             if re.search(r"replica_(gradients|update|eval_sums)", f)}
    # 3 parts x 2 replicas for each family, one function each.
    assert len(parts) == 6 * len(families), sorted(counts)
    # Each pack trains chunks of 2 and 1 steps (the indices padded to 2 steps): one shape,
    # one compilation per part and replica, whatever the step index within the chunk (a
    # slice by the step index made XLA compile the gradient part once per step) and in
    # every later pack (the packs beside a calm and a diverging member included).
    for function, count in parts.items():
        assert count == 1, (function, count)


def check_diverged_member_leaves_the_other_alone(beside: dict) -> None:
    calm, bad = beside["calm"], beside["bad"]
    assert calm["status"] == ["complete", "complete"]
    # The partner really went to inf/NaN, so its values reached every layer's kernels.
    assert bad["status"][0] == "diverged" and not bad["partner_finite"]
    assert bad["status"][1] == "complete"
    for w_bad, w_calm in zip(bad["weights"], calm["weights"]):
        np.testing.assert_allclose(np.array(w_bad), np.array(w_calm), rtol=1e-6, atol=1e-7)
    for metric, value in calm["metrics"].items():
        assert bad["metrics"][metric] == pytest.approx(value, rel=1e-6, abs=1e-7), metric

"""A user's own model, data and loss, from files outside the package: the public API
(register_*, Dataset.from_arrays, StreamedDataset.from_tf_data, Task, run_sweep), the data
fingerprint, loud failures and ties."""

import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tf_sgd_regimes as sgd
from conftest import REPO
from tf_sgd_regimes import data
from tf_sgd_regimes import experiments
from tf_sgd_regimes import models
from tf_sgd_regimes import report
from tf_sgd_regimes import tasks
from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import loop as sweep_lib
from tf_sgd_regimes.sweep import summaries


@pytest.fixture(autouse=True, scope="module")
def _registries_restored():
    """What this module registers stays in this module: another test file run later in
    the same worker (e.g. the README's experiment table check) sees the package's own."""
    experiments.names()  # the package's experiments are found on first use: find them now
    saved = [(registry, dict(registry)) for registry in
             (experiments._EXPERIMENTS, models._MODELS, data._DATASETS, tasks._REGISTERED)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


# A model builder, two numpy data sets and an experiment config, as a user writes them.
WORKLOAD = '''
import keras
import numpy as np

import tf_sgd_regimes as sgd


def build_dense(input_shape, num_outputs, *, seed, **fields):
    inputs = keras.Input(shape=input_shape)
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, kernel_initializer=init)(inputs))


def arrays(seed, kind):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=4)
    x = rng.normal(size=(120, 4))
    y = x @ w + 0.1 * rng.normal(size=120)
    return (x[:80], (y[:80] > 0).astype(int) if kind == "classification" else y[:80],
            x[80:], (y[80:] > 0).astype(int) if kind == "classification" else y[80:])


sgd.register_model("ow_logistic", build_dense, task="classification",
                   tiny_config=dict(input_shape=(4,), num_outputs=2))
sgd.register_model("ow_linear", build_dense, task="regression",
                   tiny_config=dict(input_shape=(4,), num_outputs=1))
sgd.register_dataset("ow_signs", lambda: sgd.Dataset.from_arrays(
    "ow_signs", *arrays(0, "classification"), task="classification"))
sgd.register_dataset("ow_values", lambda seed=0: sgd.Dataset.from_arrays(
    "ow_values", *arrays(seed, "regression"), task="regression"))
'''
EXPERIMENT = '''
import ow_workload  # noqa: F401
import tf_sgd_regimes as sgd


def get_config(variant="classification"):
    model, data = {"classification": ("ow_logistic", "ow_signs"),
                   "regression": ("ow_linear", "ow_values")}[variant]
    config = sgd.base_config(task=variant)
    config.model.name, config.data.name = model, data
    config.sweep.optimizers = ("sgd",)
    config.sweep.batch_sizes = (8, 16)
    config.sweep.effective_lrs = (0.05, 0.2)
    config.sweep.seeds = (0, 1)
    config.analysis.best_k, config.analysis.num_seeds = 1, 2
    config.budget.epochs = 1.0
    return config
'''


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user")
    assert not str(directory).startswith(str(REPO))
    (directory / "ow_workload.py").write_text(WORKLOAD)
    (directory / "ow_experiment.py").write_text(EXPERIMENT)
    return directory


def user_config(user_dir, variant, *overrides):
    config = sgd.get_config(f"{user_dir / 'ow_experiment.py'}:{variant}")
    return experiments.apply_overrides(config, overrides)


# --- the done-when: a config file outside the package through run_sweep (the same through
# the CLI: tests/test_readme_workload.py runs the README's files with --config=) ---------
@pytest.mark.parametrize("variant, metrics", [
    ("classification", {"test_accuracy", "test_loss", "train_accuracy", "train_loss"}),
    ("regression", {"test_mse", "test_rmse", "test_mae", "test_loss", "train_mse"})])
def test_run_sweep_runs_a_config_file_and_reports(user_dir, tmp_path, variant, metrics):
    config = user_config(user_dir, variant)
    assert config.name == f"ow_experiment_{variant}"
    stream = io.StringIO()
    result = sgd.run_sweep(config, str(tmp_path / "w"), stream=stream)
    assert len(result.records) == 8 and not result.failed
    for record in result.records:
        assert metrics <= set(record["metrics"])
        assert record["data"]["name"] == config.data.name
        if variant == "regression":
            m = record["metrics"]
            assert m["test_rmse"] == pytest.approx(math.sqrt(m["test_mse"]))
            assert m["test_loss"] == pytest.approx(m["test_mse"])
            # Jensen: mean |e| <= sqrt(mean e^2) for a single output.
            assert m["test_mae"] <= m["test_rmse"] + 1e-6
    selection, _ = tasks.selection(variant)
    assert f"selection: {selection}" in result.report["text"]
    assert os.path.exists(os.path.join(result.report["out_dir"], "report.txt"))


# --- the engine's regression metrics against numpy ---------------------------------------
@pytest.mark.parametrize("streamed", [False, True])
def test_regression_metrics_of_an_untrained_model_match_numpy(user_dir, tmp_path, streamed):
    """At a learning rate of 1e-12 the weights stay at their initialisation, so the
    engine's test MSE / MAE must be those of the freshly built model, computed here."""
    sgd.get_config(f"{user_dir / 'ow_experiment.py'}:regression")  # registers the workload
    import ow_workload

    x_train, y_train, x_test, y_test = ow_workload.arrays(0, "regression")
    if streamed:
        ds = sgd.StreamedDataset.from_tf_data(
            "ow_stream", tf.data.Dataset.from_tensor_slices((x_train.astype(np.float32),
                                                             y_train.astype(np.float32))),
            tf.data.Dataset.from_tensor_slices((x_test.astype(np.float32),
                                                y_test.astype(np.float32))),
            task="regression", num_outputs=1, info={"arrays": "ow_workload.arrays(0)"})
        assert (ds.num_train, ds.num_test, ds.input_shape) == (80, 40, (4,))
    else:
        ds = sgd.Dataset.from_arrays("ow_plain", x_train, y_train, x_test, y_test,
                                     task="regression")
    config = user_config(user_dir, "regression", "sweep.effective_lrs=(1e-12,)",
                         "sweep.batch_sizes=(8,)", "train.eval_batch_size=16")
    result = sgd.run_sweep(config, str(tmp_path / "w"), dataset=ds, report=False,
                           stream=io.StringIO())
    assert result.report is None and len(result.records) == 2
    for record in result.records:
        model = ow_workload.build_dense((4,), 1, seed=record["hparams"]["seed"])
        error = model(x_test.astype(np.float32)).numpy()[:, 0] - y_test
        assert record["metrics"]["test_mse"] == pytest.approx(np.mean(error ** 2), rel=1e-4)
        assert record["metrics"]["test_mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-4)


def test_regression_and_custom_task_losses_against_numpy():
    rng = np.random.default_rng(3)
    outputs = rng.normal(size=(6, 2)).astype(np.float32)
    targets = rng.normal(size=(6, 2)).astype(np.float32)
    weights = np.array([1, 1, 1, 1, 0, 0], np.float32)
    squared = ((outputs - targets) ** 2).sum(axis=1)
    absolute = np.abs(outputs - targets).sum(axis=1)
    np.testing.assert_allclose(tasks.per_example_loss("regression", outputs, targets, None),
                               squared, rtol=1e-5)
    sums = tasks.eval_sums("regression", outputs, targets, None, weights).numpy()
    np.testing.assert_allclose(sums, [squared[:4].sum(), absolute[:4].sum(), 4], rtol=1e-5)
    metrics = tasks.metrics_from_sums("regression", sums, "test")
    assert metrics == pytest.approx({"test_loss": squared[:4].mean(),
                                     "test_mse": squared[:4].mean(),
                                     "test_rmse": math.sqrt(squared[:4].mean()),
                                     "test_mae": absolute[:4].mean()}, rel=1e-5)
    assert set(metrics) | {f"train_{k[5:]}" for k in metrics} == set(
        tasks.metric_names("regression"))
    # A user's task: a per-example hinge loss and its accuracy as the statistic.
    hinge = sgd.Task("ow_hinge", loss=lambda o, t, i: tf.nn.relu(1.0 - o[:, 0] * t),
                     statistic=lambda o, t, i: tf.cast(o[:, 0] * t > 0, tf.float32),
                     metrics={"accuracy": lambda loss, stat: stat}, selection=("accuracy", "max"))
    name = tasks.resolve(hinge)
    o = np.array([[2.0], [0.5], [-1.0]], np.float32)
    t = np.array([1.0, 1.0, 1.0], np.float32)
    sums = tasks.eval_sums(name, o, t, None, np.ones(3, np.float32)).numpy()
    assert tasks.metrics_from_sums(name, sums, "validation") == pytest.approx(
        {"validation_loss": (0 + 0.5 + 2.0) / 3, "validation_accuracy": 2 / 3})
    assert tasks.selection(name, "validation") == ("validation_accuracy", "max")
    # TensorBoard's HParams metrics follow the task, its selection metric first.
    assert summaries.metric_names(name, "test")[:4] == [
        "final/test_accuracy", "final/test_loss", "final/train_loss", "final/train_accuracy"]
    assert summaries.metric_names("regression", "test")[0] == "final/test_mse"
    assert tasks.resolve(sgd.Task("ow_hinge", loss=hinge.loss, statistic=hinge.statistic,
                                  metrics=hinge.metrics, selection=hinge.selection))
    with pytest.raises(ValueError, match="unknown task 'regresion'.*regression"):
        tasks.resolve("regresion")
    with pytest.raises(ValueError, match="selection metric 'rmse'"):
        sgd.Task("ow_bad", loss=hinge.loss, selection=("rmse", "min"))


# --- data sets from arrays ---------------------------------------------------------------
def test_from_arrays_types_checks_and_derives_sizes():
    x = np.arange(12.0).reshape(6, 2)
    ds = sgd.Dataset.from_arrays("ow_a", x[:4], [0, 2, 1, 0], x[4:], [1, 1])
    assert ds.num_outputs == 3 and ds.input_shape == (2,) and ds.train_y.dtype == np.int32
    assert ds.train_x.dtype == np.float32
    reg = sgd.Dataset.from_arrays("ow_r", x[:4], np.ones((4, 3)), x[4:], np.ones((2, 3)),
                                  task="regression")
    assert reg.num_outputs == 3 and reg.train_y.dtype == np.float32
    with pytest.raises(ValueError, match="non-integer class labels"):
        sgd.Dataset.from_arrays("ow_b", x[:4], [0.5, 1, 0, 1], x[4:], [1, 0])
    with pytest.raises(ValueError, match="train_y has 3 rows but train_x has 4"):
        sgd.Dataset.from_arrays("ow_c", x[:4], [0, 1, 0], x[4:], [1, 0])
    with pytest.raises(ValueError, match="label 2 is out of range"):
        sgd.Dataset.from_arrays("ow_d", x[:4], [0, 1, 2, 0], x[4:], [1, 0], num_outputs=2)


def test_fingerprint_follows_the_content_not_the_object():
    x = np.arange(12.0).reshape(6, 2)
    a = data.fingerprint(sgd.Dataset.from_arrays("ow_f", x[:4], [0, 1, 1, 0], x[4:], [1, 0]))
    b = data.fingerprint(sgd.Dataset.from_arrays("ow_f", x[:4], [0, 1, 1, 0], x[4:], [1, 0]))
    c = data.fingerprint(sgd.Dataset.from_arrays("ow_f", x[:4], [0, 1, 1, 1], x[4:], [1, 0]))
    assert a == b and a["hash"] != c["hash"]
    assert (a["num_train"], a["num_test"], a["input_shape"]) == (4, 2, [2])


def test_a_work_directory_refuses_another_data_set_before_any_compute(user_dir, tmp_path):
    workdir = str(tmp_path / "w")
    first = user_config(user_dir, "regression")
    sweep_lib.Sweep(first, workdir, stream=io.StringIO())  # claims the directory, trains nothing
    saved = json.load(open(os.path.join(workdir, "data.json")))
    assert saved["name"] == "ow_values" and saved["num_train"] == 80
    # The same data set name, other arrays (the loader's seed field): the fingerprint differs.
    config = first.copy_and_resolve_references()
    config.unlock()
    config.data.seed = 1
    with pytest.raises(experiments.ConfigError, match="another data set.*differ in hash"):
        sweep_lib.Sweep(config, workdir, stream=io.StringIO())
    assert not os.path.exists(os.path.join(workdir, "ledger"))
    # Another data set altogether.
    with pytest.raises(experiments.ConfigError, match="saved one is 'ow_values'.*'ow_signs'"):
        sweep_lib.Sweep(user_config(user_dir, "classification"), workdir, stream=io.StringIO())


# --- names and metrics are validated, with the known ones ------------------------------
@pytest.mark.parametrize("override, match", [
    ("model.name=ow_nothing", "unknown model 'ow_nothing'.*ow_linear"),
    ("data.name=ow_nothing", "unknown data set 'ow_nothing'.*ow_values"),
    ("analysis.selection_metric=test_accuracy", "not a metric of task 'regression'.*test_mse"),
    ("model.name=ow_logistic", "registered for task 'classification'.*'regression'"),
])
def test_bad_names_are_config_errors_naming_the_known_ones(user_dir, tmp_path, override, match):
    config = user_config(user_dir, "regression", override)
    with pytest.raises(experiments.ConfigError, match=match):
        sgd.run_sweep(config, str(tmp_path / "w"), stream=io.StringIO())
    assert not (tmp_path / "w").exists()


def test_outputs_that_do_not_fit_the_targets_are_refused_before_compute(user_dir, tmp_path):
    sgd.get_config(f"{user_dir / 'ow_experiment.py'}:regression")  # registers the workload
    import ow_workload

    x_train, y_train, x_test, y_test = ow_workload.arrays(0, "regression")
    line = sgd.Dataset.from_arrays("ow_line", x_train, y_train, x_test, y_test,
                                   task="regression")

    def build_two(input_shape, num_outputs, *, seed):
        return ow_workload.build_dense(input_shape, 2, seed=seed)

    config = user_config(user_dir, "regression")
    config.unlock()
    config.model.name = ""
    with pytest.raises(experiments.ConfigError, match=r"outputs \(2, 2\) do not fit the targets"):
        sgd.run_sweep(config, str(tmp_path / "a"), model=build_two, dataset=line)
    mean_loss = sgd.Task("ow_mean", loss=lambda o, t, i: tf.reduce_mean(tf.square(o[:, 0] - t)))
    scalar = sgd.Dataset.from_arrays("ow_scalar", x_train, y_train, x_test, y_test,
                                     task=mean_loss)
    config = sgd.base_config(task=mean_loss)
    with pytest.raises(experiments.ConfigError, match=r"loss of 2 examples has shape \(\)"):
        sgd.run_sweep(config, str(tmp_path / "b"), model=ow_workload.build_dense,
                      dataset=scalar)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    def build_nothing(input_shape, num_outputs, *, seed):
        raise RuntimeError("no model today")

    with pytest.raises(experiments.ConfigError, match="building it failed.*no model today"):
        sgd.run_sweep(sgd.base_config(task="regression"), str(tmp_path / "c"),
                      model=build_nothing, dataset=line)


def test_cli_exits_2_on_an_unknown_data_set_and_1_when_every_cell_failed(user_dir, tmp_path):
    (user_dir / "ow_broken.py").write_text(textwrap.dedent('''
        import ow_experiment
        import tf_sgd_regimes as sgd


        def build_broken(input_shape, num_outputs, *, seed, **fields):
            # Builds at seed 0 (the check before compute) and breaks in training, where
            # every pack also builds seed 1.
            if seed:
                raise ValueError("ow builder is broken on purpose")
            return ow_experiment.ow_workload.build_dense(input_shape, num_outputs, seed=seed)


        sgd.register_model("ow_broken", build_broken, task="regression")


        def get_config():
            config = ow_experiment.get_config("regression")
            config.model.name = "ow_broken"
            return config
        '''))
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tf_sgd_regimes.run", "--config=ow_broken.py", *args],
        cwd=user_dir, env=env, capture_output=True, text=True, timeout=600)
    bad = run(f"--workdir={tmp_path / 'bad'}", "--config.data.name=ow_valuez")
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "unknown data set 'ow_valuez'" in bad.stderr and "ow_values" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()

    done = run(f"--workdir={tmp_path / 'w'}")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "failed 4" in done.stdout and "failed 8" in done.stdout  # the progress lines
    assert "all 8 cells failed" in done.stderr
    assert "ow builder is broken on purpose" in done.stderr
    # The message names the first failure's cell and the ledger segment holding its record
    # (which segment depends on the pack order), and how to retry.
    named = re.search(r"The first failure \((\S+)\):.*its record is in (\S+);", done.stderr,
                      re.S)
    assert named, done.stderr[-2000:]
    cell_id, segment = named.groups()
    assert segment in {str(p) for p in (tmp_path / "w" / "ledger").glob("seg-*.jsonl")}
    assert cell_id in open(segment).read() and "--retry_failed" in done.stderr


# --- registries --------------------------------------------------------------------------
def test_registries_take_one_record_per_entry_and_refuse_clashes():
    def build(input_shape, num_outputs, *, seed, **fields):
        return models.get_model("mlp", input_shape, num_outputs, seed, hidden=(3,))

    sgd.register_model("ow_tiny", build, task="regression",
                       tiny_config=dict(input_shape=(2,), num_outputs=1))
    assert "ow_tiny" in models.names(with_tiny=True) and models.task_of("ow_tiny") == "regression"
    sgd.register_model("ow_tiny", build, task="regression")  # a re-run: fine
    with pytest.raises(ValueError, match="already registered"):
        sgd.register_model("ow_tiny", lambda input_shape, num_outputs, *, seed: None)
    with pytest.raises(ValueError, match="must take a `seed` keyword"):
        sgd.register_model("ow_noseed", lambda input_shape, num_outputs: None)
    with pytest.raises(ValueError, match="unknown task"):
        sgd.register_model("ow_notask", build, task="regresion")
    sgd.register_experiment("ow_exp", lambda: experiments.get_config("digits_mlp_epoch_budget"))
    assert "ow_exp" in experiments.names()
    assert experiments.get_config("ow_exp").name == "ow_exp"
    with pytest.raises(ValueError, match="already registered"):
        sgd.register_experiment("digits_mlp_epoch_budget", build)
    with pytest.raises(experiments.ConfigError, match="returned a int"):
        sgd.register_dataset("ow_int", lambda: 3)
        data.get_dataset("ow_int")


def test_import_stays_cheap():
    code = ("import sys, tf_sgd_regimes\n"
            "print('tensorflow' in sys.modules, sorted(tf_sgd_regimes.__all__)[:3])")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.stdout.startswith("False"), done.stdout + done.stderr


# --- ties --------------------------------------------------------------------------------
def _records(accuracies, num_test=50):
    """One sgd record per (lr, seed): accuracies is {lr: [acc per seed]}."""
    records = []
    for lr, values in accuracies.items():
        for seed, acc in enumerate(values):
            records.append({
                "cell_id": f"sgd_B00008_lr{lr}_s{seed}", "status": "complete",
                "hparams": {"optimizer": "sgd", "momentum": 0.0, "batch_size": 8,
                            "effective_lr": lr, "learning_rate": lr, "seed": seed,
                            "epochs": 1.0, "steps": 10},
                "metrics": {"test_accuracy": acc, "test_loss": 1.0 - acc + lr / 100,
                            "train_loss": 0.5},
                "data": {"num_test": num_test, "num_train": 100}})
    return records


def test_ties_within_one_test_example_are_found():
    settings = analysis.Settings(best_k=2, num_seeds=2)
    # Best-2 means: 0.90, 0.91 (half an example above), 0.90, 0.80 (5 examples below).
    records = _records({0.1: [0.90, 0.90], 0.2: [0.90, 0.92], 0.4: [0.88, 0.92],
                        0.8: [0.80, 0.80]})
    assert analysis.metric_resolution(records, "test_accuracy") == pytest.approx(1 / 50)
    assert analysis.metric_resolution(records, "test_loss") == 0.0
    tied = analysis.ties(analysis.cell_stats(records, settings), settings, 1 / 50)
    assert len(tied) == 1
    assert tied.iloc[0]["tied_lrs"] == (0.1, 0.2, 0.4) and tied.iloc[0]["optimal_lr"] == 0.2
    # Without the data fingerprint the resolution comes from the values (multiples of 1/50).
    for record in records:
        del record["data"]
    assert analysis.metric_resolution(records, "test_accuracy") == pytest.approx(1 / 50)
    # Distinct by more than one example: no tie.
    apart = _records({0.1: [0.90, 0.90], 0.2: [0.94, 0.94]})
    assert analysis.ties(analysis.cell_stats(apart, settings), settings, 1 / 50).empty


def test_the_report_names_ties_and_suggests_the_loss(tmp_path):
    config = {"name": "ow_ties", "analysis": {"best_k": 1, "num_seeds": 1}}
    tied = report.generate(str(tmp_path), config, _records({0.1: [0.9], 0.2: [0.9],
                                                            0.4: [0.5]}))
    assert "the optimum is a tie" in tied["text"] and "0.1, 0.2" in tied["text"]
    assert "--config.analysis.selection_metric=test_loss" in tied["text"]
    assert "within one evaluation example (1/50)" in tied["text"]
    clear = report.generate(str(tmp_path / "b"), config, _records({0.1: [0.9], 0.2: [0.8]}))
    assert "the optimum is a tie" not in clear["text"]

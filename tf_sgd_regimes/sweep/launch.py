"""One experiment's sweep in any role, with edge extension and its report: what `run.py`
drives, callable from a script or notebook as well (as tf_sgd_regimes.run_sweep).

    result = run_sweep(config, workdir)                        # standalone, with report
    result = run_sweep(config, workdir, model=build_fn, dataset=Dataset.from_arrays(...))
    result.records, result.report["text"], result.config
    run_sweep(config, workdir, role="chief")

Errors are raised, not turned into exit codes (run.py does that): ConfigError,
DataMissingError, LedgerError (bad input), Preempted (SIGTERM, checkpoint saved),
DiskFullError.
"""

import copy
import os
import sys
from typing import Callable, List, NamedTuple, Optional, Union

from tf_sgd_regimes.sweep import distributed
from tf_sgd_regimes.sweep import edges
from tf_sgd_regimes.sweep import ledger
from tf_sgd_regimes.sweep import loop as sweep_lib
from tf_sgd_regimes.sweep import signals


class ChiefStopped(Exception):
    """The chief got SIGTERM before every cell had ended; re-running it goes on."""


class SweepResult(NamedTuple):
    """What run_sweep returns."""

    records: List[dict]  # every ledger record of the sweep
    report: Optional[dict]  # report.generate's result ("text", "tables", ...) or None
    config: object  # the config as run (grown, if edges were extended)

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def all_failed(self) -> bool:
        return bool(self.records) and len(self.failed) == len(self.records)


def prepare(config, model=None, dataset=None, load: bool = True):
    """The config to run with `model` and `dataset` registered and named in it; returns
    (config, the data set object or None). Checks names before anything is loaded.

    Args:
      config: a ConfigDict, a registered experiment's name or a "path/file.py[:variant]".
      model: a registered model name, or a builder
        build(input_shape, num_outputs, *, seed, **config.model fields) -> keras.Model,
        registered under config.model.name (or the function's name) for the data's task.
      dataset: a registered data set name, a loader function, or a Dataset /
        StreamedDataset object (registered under its name).
      load: load the data set (to check the task and metrics against it); a chief,
        which trains nothing, skips it.
    """
    import ml_collections

    from tf_sgd_regimes import cpu_threads
    from tf_sgd_regimes import data
    from tf_sgd_regimes import experiments
    from tf_sgd_regimes import models

    if isinstance(config, str):
        config = experiments.resolve_config(config)
    config = copy.deepcopy(config)
    if isinstance(config, ml_collections.ConfigDict):
        config.unlock()
    loaded = None
    if isinstance(dataset, (data.Dataset, data.StreamedDataset)):
        loaded = dataset
        data.register_dataset(dataset.name, dataset)
        config.data = ml_collections.ConfigDict({"name": dataset.name})
    elif callable(dataset):
        name = config.data.name or dataset.__name__
        data.register_dataset(name, dataset)
        config.data.name = name
    elif dataset is not None:
        config.data.name = dataset
    if callable(model) and loaded is None:
        data.check_name(config.data.name)
        loaded = sweep_lib.load_dataset(config)
    if callable(model):
        name = config.model.name or model.__name__
        models.register_model(name, model, task=loaded.task)
        config.model.name = name
    elif model is not None:
        config.model.name = model
    if not config.get("name"):
        config.name = f"{config.model.name}_{config.data.name}"
    config.lock()
    experiments.validate(config)  # names: ConfigError before anything is loaded
    # Before loading: the thread pools are fixed once TensorFlow's runtime starts.
    cpu_threads.apply(config)
    if loaded is None and load and config.get("engine", "keras") == "keras":
        loaded = sweep_lib.load_dataset(config)
    if loaded is not None:  # the model's task and the metrics against the data's task
        experiments.validate(config, task=loaded.task, split=loaded.split)
        if config.get("engine", "keras") == "keras":
            fields = dict(config.model)
            models.check_outputs(fields.pop("name"), fields, loaded)
    return config, loaded


def failure_summary(records: List[dict], workdir: str) -> str:
    """"" when no cell failed; else how many, and the first failure's error and record path."""
    failed = [r for r in records if r["status"] == "failed"]
    if not failed:
        return ""
    first = failed[0]
    path = os.path.abspath(ledger.Ledger(workdir).path_of(first["cell_id"]) or
                           ledger.ledger_dir(workdir))
    error = (first.get("error") or "(no error recorded)").rstrip()
    head = (f"all {len(records)} cells failed" if len(failed) == len(records)
            else f"{len(failed)} of {len(records)} cells failed")
    return (f"{head}. The first failure ({first['cell_id']}):\n{error}\n"
            f"(its record is in {path}; to train the failed cells again, run "
            f"`python -m tf_sgd_regimes.sweep.ledger --workdir={workdir} --retry_failed`, "
            "then the same command)")


def run_sweep(config, workdir: str, role: str = "standalone", tuner_id: Optional[str] = None,
              extend_edges: Optional[bool] = None, *, model: Union[str, Callable, None] = None,
              dataset=None, report: bool = True, stream=None,
              print_failures: bool = True) -> SweepResult:
    """Runs (or resumes) the sweep and writes its report; returns a SweepResult of the
    records, the report and the config (grown, if edges were extended).

    Args:
      config: an experiment config (ConfigDict), a registered experiment's name or a
        config file "path/to/file.py[:variant]"; validated here.
      workdir: the sweep's work directory (shared by a chief and its workers).
      model, dataset: see `prepare`: names, or your own builder and data set.
      report: write the report (<workdir>/report/) of the records at the end.
      stream: where progress lines go (default stdout).
      print_failures: print, at the end, how many cells failed with the first failure's
        error and record path (failure_summary); run.py prints it after the report.
      role: "standalone", "chief" (serves the oracle, trains nothing) or "worker"
        (KERASTUNER_ORACLE_IP/PORT and KERASTUNER_TUNER_ID must be set).
      tuner_id: a standalone sweep's name in pack ids (default worker0).
      extend_edges: grow the learning-rate grid where an optimum sits on its edge
        (None: config.sweep.extend_edges.enabled). Workers never extend: the chief's
        grid is the one handed out.
    """
    config, loaded = prepare(config, model, dataset, load=role != "chief")
    out = stream or sys.stdout
    # A grid grown by --extend_edges stays grown when the same command runs again.
    config = edges.with_recorded_extensions(config, workdir)
    if role == "chief":
        os.environ.setdefault(distributed.ENV_TUNER_ID, "chief")
        with signals.StopRequest() as stop:
            if not distributed.serve(config, workdir, should_stop=stop):
                raise ChiefStopped("chief stopped by SIGTERM; re-run it to go on")
        records = ledger.read(workdir)
        return _finish(config, workdir, records, report, out, print_failures)
    oracle, tuner_id = None, tuner_id or "worker0"
    if role == "worker":
        distributed.role_from_env()  # checks the address and tuner id are set
        tuner_id = os.environ[distributed.ENV_TUNER_ID]
        oracle = distributed.worker_oracle(config, workdir)
    sweep = sweep_lib.Sweep(config, workdir, tuner_id=tuner_id, oracle=oracle, dataset=loaded,
                            stream=stream)
    print(f"[run] {len(sweep.cells)} cells on {sweep.strategy.num_replicas_in_sync} "
          f"replica(s) as {role} {tuner_id}; progress every few seconds", file=out, flush=True)
    records = sweep.run()
    if extend_edges is None:
        extend_edges = edges.edge_settings(config).enabled
    if role != "worker" and extend_edges:
        def run_grown(grown):
            return sweep_lib.Sweep(grown, workdir, dataset=sweep.dataset,
                                   strategy=sweep.strategy, stream=stream).run()

        records = edges.extend_edges(config, workdir, run_grown, records=records)
        config = edges.with_recorded_extensions(config, workdir)
        print(f"[run] learning-rate grid edges: {edges.load(workdir)['status']} "
              f"({os.path.abspath(os.path.join(workdir, edges.EDGES_FILE))})", file=out,
              flush=True)
    if role == "worker":
        return SweepResult(records, None, config)
    return _finish(config, workdir, records, report, out, print_failures)


def _finish(config, workdir: str, records: List[dict], report: bool, out,
            print_failures: bool) -> SweepResult:
    result = None
    if report:
        from tf_sgd_regimes import report as report_lib

        result = report_lib.generate(workdir, config, records)
    summary = failure_summary(records, workdir)
    if summary and print_failures:
        print(f"[run] {summary}", file=out, flush=True)
    return SweepResult(records, result, config)

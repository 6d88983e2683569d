"""Command line: pick an experiment, run its sweep, write its report.

    python -m tf_sgd_regimes.run                                  # the embedded default
    python -m tf_sgd_regimes.run --experiment=list                # what can run, and its cost
    python -m tf_sgd_regimes.run --experiment=NAME --workdir=DIR --config.sweep.seeds='(0,1)'
    python -m tf_sgd_regimes.run --config=path/to/my_experiment.py[:variant] --config.a.b=v

A config file (ml_collections' config_flags convention) defines get_config() (or
get_config(variant)) and may register its own model and data set, or import a module that
does (its directory is on the import path): see the README, "Add your own workload".

Re-running a command resumes it. Distributed (keras-tuner chief/worker, shared --workdir):
    python -m tf_sgd_regimes.run --role=chief  --oracle_address=HOST:PORT --workdir=DIR
    python -m tf_sgd_regimes.run --role=worker --oracle_address=HOST:PORT --tuner_id=tuner0 ...
Exit status: 0 done, 1 every cell failed (the first failure's error is printed), 2 bad
input (config, names of model / data set / task / metric, data, corrupt ledger), 74 disk
full (free space and re-run), 75 preempted by SIGTERM (checkpoint saved; re-run to resume).
"""

import os
import sys

# TensorFlow's C++ start-up chatter hides our progress lines; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

_EXPERIMENT = flags.DEFINE_string(
    "experiment", None, "Experiment name; 'list' prints the known ones. Default: "
    "digits_mlp_epoch_budget (embedded, no download).")
_CONFIG = flags.DEFINE_string(
    "config", None, "An experiment config file, path/to/file.py[:variant], defining "
    "get_config() (ml_collections config_flags convention); instead of --experiment. "
    "--config.a.b=value overrides apply to it as to a named experiment.")
_LIST = flags.DEFINE_bool("list", False, "Print the experiments with their cost and exit.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where the sweep keeps its config, ledger, TensorBoard logs and report. "
    "Default: ./runs/<experiment>. Re-running with the same workdir resumes.")
_EXTEND_EDGES = flags.DEFINE_bool(
    "extend_edges", None, "Grow the learning-rate grid where an optimum sits on its edge "
    "(default: config.sweep.extend_edges.enabled).")
_NO_REPORT = flags.DEFINE_bool("no_report", False, "Skip the report at the end.")
_ROLE = flags.DEFINE_enum(
    "role", None, ["standalone", "chief", "worker"],
    "standalone (default), or chief / worker of a distributed sweep (keras-tuner's "
    "chief/worker mode). Default: from KERASTUNER_ORACLE_IP / KERASTUNER_TUNER_ID.")
_ORACLE_ADDRESS = flags.DEFINE_string(
    "oracle_address", None, "HOST:PORT of the chief (sets KERASTUNER_ORACLE_IP/PORT).")
_TUNER_ID = flags.DEFINE_string(
    "tuner_id", None, "This worker's stable name (sets KERASTUNER_TUNER_ID); a restarted "
    "worker must reuse it to take its unfinished pack back.")

_CONFIG_PREFIX = "--config."
EXIT_ALL_FAILED = 1


def split_overrides(argv):
    """Separates --config.a.b=v overrides (ours) from the flags absl parses."""
    overrides, rest = [], []
    for arg in argv:
        (overrides if arg.startswith(_CONFIG_PREFIX) else rest).append(arg)
    return overrides, rest


def main(argv, overrides=()):
    # Imported here so --help and flag errors answer before TensorFlow loads.
    from tf_sgd_regimes import experiments

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow's checkpoint saver logs at INFO on every save; keep progress readable.
        from absl import logging

        logging.set_verbosity(logging.WARNING)
    name = _EXPERIMENT.value or experiments.DEFAULT_EXPERIMENT
    if _LIST.value or name == "list":
        print(experiments.describe())
        return 0
    if _CONFIG.value and _EXPERIMENT.value:
        print("error: pass --experiment=NAME or --config=FILE.py, not both", file=sys.stderr)
        return 2
    try:
        if _CONFIG.value:
            config = experiments.load_config_file(_CONFIG.value)
            name = config.name
        else:
            config = experiments.get_config(name)
        config = experiments.apply_overrides(config, overrides)
        experiments.validate(config)
    except experiments.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = _WORKDIR.value or os.path.join("runs", name)
    print(f"[run] experiment {name}: {config.description}", flush=True)
    print(f"[run] work directory {os.path.abspath(workdir)}", flush=True)

    from tf_sgd_regimes import data
    from tf_sgd_regimes import pack_checkpoint
    from tf_sgd_regimes.sweep import distributed
    from tf_sgd_regimes.sweep import launch
    from tf_sgd_regimes.sweep import ledger
    from tf_sgd_regimes.sweep import loop as sweep_lib
    from tf_sgd_regimes.sweep import signals

    try:
        if _ORACLE_ADDRESS.value:
            distributed.set_address(_ORACLE_ADDRESS.value, _TUNER_ID.value or "")
        role = _ROLE.value or distributed.role_from_env()
        result = launch.run_sweep(config, workdir, role, _TUNER_ID.value, _EXTEND_EDGES.value,
                                  report=not _NO_REPORT.value, print_failures=False)
        config, records = result.config, result.records
    except (experiments.ConfigError, data.DataMissingError, ledger.LedgerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except launch.ChiefStopped as e:
        print(f"[run] {e}", flush=True)
        return signals.EXIT_PREEMPTED
    except pack_checkpoint.Preempted as e:
        print(f"[run] preempted: {e}. Checkpoint saved; re-run the same command to resume.",
              flush=True)
        return signals.EXIT_PREEMPTED
    except sweep_lib.DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        return signals.EXIT_DISK_FULL
    if role == "worker":
        tuner_id = os.environ[distributed.ENV_TUNER_ID]  # run_sweep checked it is set
        print(f"[run] worker {tuner_id} finished: no cells left to hand out", flush=True)
        return 0
    if result.report is not None:
        report = result.report
        print(report["text"], flush=True)
        print(f"[run] report: {os.path.abspath(os.path.join(report['out_dir'], 'report.txt'))}")
        for optimizer, paths in sorted(report.get("tables", {}).items()):
            print(f"[run] table ({optimizer}): {os.path.abspath(paths['md'])}")
        for kind, paths in sorted(report.get("figures", {}).items()):
            png = [p for p in paths if p.endswith(".png")]
            print(f"[run] figure ({kind}): {os.path.abspath((png or paths)[0])}")
    tensorboard = os.path.abspath(os.path.join(workdir, "tensorboard"))
    print(f"[run] TensorBoard: tensorboard --logdir {tensorboard}  (HParams tab: one run per "
          "cell)", flush=True)
    summary = launch.failure_summary(records, workdir)
    if summary:
        print(f"[run] {summary}", file=sys.stderr if result.all_failed else sys.stdout,
              flush=True)
    if result.all_failed:
        return EXIT_ALL_FAILED
    return 0


def entry_point():
    overrides, rest = split_overrides(sys.argv)
    app.run(lambda argv: main(argv, overrides), argv=rest)


if __name__ == "__main__":
    entry_point()

"""Command line: pick an experiment, run its sweep, write its report.

    python -m tf_sgd_regimes.run                                  # the embedded default
    python -m tf_sgd_regimes.run --experiment=list                # what can run, and its cost
    python -m tf_sgd_regimes.run --experiment=NAME --workdir=DIR --config.sweep.seeds='(0,1)'
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
_LIST = flags.DEFINE_bool("list", False, "Print the experiments with their cost and exit.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where the sweep keeps its config, ledger, TensorBoard logs and report. "
    "Default: ./runs/<experiment>. Re-running with the same workdir resumes.")
_NO_REPORT = flags.DEFINE_bool("no_report", False, "Skip the report at the end.")

_CONFIG_PREFIX = "--config."


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
    name = _EXPERIMENT.value or experiments.DEFAULT_EXPERIMENT
    if _LIST.value or name == "list":
        print(experiments.describe())
        return 0
    try:
        config = experiments.apply_overrides(experiments.get_config(name), overrides)
        experiments.validate(config)
    except experiments.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = _WORKDIR.value or os.path.join("runs", name)
    print(f"[run] experiment {name}: {config.description}", flush=True)
    print(f"[run] work directory {os.path.abspath(workdir)}", flush=True)

    from tf_sgd_regimes import data
    from tf_sgd_regimes import sweep as sweep_lib

    try:
        sweep = sweep_lib.Sweep(config, workdir)
    except (experiments.ConfigError, data.DataMissingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[run] {len(sweep.cells)} cells on {sweep.strategy.num_replicas_in_sync} "
          f"replica(s); progress every few seconds", flush=True)
    records = sweep.run()
    if not _NO_REPORT.value:
        from tf_sgd_regimes import report

        result = report.generate(workdir, config, records)
        print(result["text"], flush=True)
        for kind, path in sorted(result.get("paths", {}).items()):
            print(f"[run] {kind}: {path}")
    tensorboard = os.path.abspath(os.path.join(workdir, "tensorboard"))
    print(f"[run] TensorBoard: tensorboard --logdir {tensorboard}  (HParams tab: one run per "
          "cell)", flush=True)
    return 0


def entry_point():
    overrides, rest = split_overrides(sys.argv)
    app.run(lambda argv: main(argv, overrides), argv=rest)


if __name__ == "__main__":
    entry_point()

"""Export to and import from the batch_science layout of Shallue et al. (2018); its CLI.

    python -m tf_sgd_regimes.batch_science --export --workdir=DIR --out=DIR2
    python -m tf_sgd_regimes.batch_science --import --study=DIR2 --workdir=DIR3
    python -m tf_sgd_regimes.report --workdir=DIR3      # our analysis on their data

The layout ("Measuring the Effects of Data Parallelism on Neural Network Training", data
released with google-research's batch_science loader; field names follow its README):

    <dataset>/<model>/<optimizer>/<batch_size>/study.json
    <dataset>/<model>/<optimizer>/<batch_size>/<trial_id>/metadata.json
    <dataset>/<model>/<optimizer>/<batch_size>/<trial_id>/measurements.csv

A study is one (workload, batch size); a trial one training run. study.json holds
batch_size, dataset, early_stopping, model, optimizer, parameter_configs and train_steps;
metadata.json holds parameters (learning_rate, momentum, ...), status (COMPLETE,
INCOMPLETE, INFEASIBLE = diverged), steps and trial_id; measurements.csv has a `step`
column and one column per metric, e.g. `test/classification_error`,
`val/cross_entropy_error`.

Mapping (one trial per ledger cell):
  * status: complete <-> COMPLETE, diverged <-> INFEASIBLE, failed <-> INCOMPLETE.
  * parameters: learning_rate is the raw rate eps, momentum m (absent for plain SGD); the
    effective rate eps / (1 - m) is recomputed on import and rounded to 12 significant
    digits so grid points that went through eps = eps_eff (1 - m) compare equal. For their
    schedules it is the initial rate's effective value. Our seed is exported as a
    parameter; their trials have none, so the trial id serves as the seed.
  * metrics: split train <-> train, test <-> test, validation <-> val; accuracy <->
    classification_error (1 - accuracy); loss <-> cross_entropy_error for classification
    and language models (with an L2 term, train_data_loss <-> train/cross_entropy_error and
    train_loss <-> train/loss); any other name is kept (test_mse <-> test/mse). Our
    metrics are taken from, and written at, the final step.
  * TensorBoard scalars of a cell (the training loss over each logged chunk and the
    effective LR) are written as extra rows `train/minibatch_loss` and
    `effective_learning_rate`; the importer ignores these curve columns.
  * Extra keys that their loader ignores (`_tf_sgd_regimes` in study.json, `_cell_id`,
    `_epochs`, ... in metadata.json) make our own export round-trip exactly.
"""

import collections
import datetime
import json
import math
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from tf_sgd_regimes import atomic
from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import ledger

STATUS_TO_THEIRS = {"complete": "COMPLETE", "diverged": "INFEASIBLE", "failed": "INCOMPLETE"}
STATUS_FROM_THEIRS = {v: k for k, v in STATUS_TO_THEIRS.items()}
SPLIT_TO_THEIRS = {"train": "train", "test": "test", "validation": "val"}
SPLIT_FROM_THEIRS = {v: k for k, v in SPLIT_TO_THEIRS.items()}
# TensorBoard tag -> measurements column; curves, not final metrics.
CURVE_COLUMNS = {"train/loss": "train/minibatch_loss",
                 "train/effective_lr": "effective_learning_rate"}


# ------------------------------------------------------------------------ metric names


def _split(name: str):
    for split in sorted(SPLIT_TO_THEIRS, key=len, reverse=True):
        if name.startswith(split + "_"):
            return split, name[len(split) + 1:]
    return None, name


def metrics_to_columns(metrics: dict) -> Dict[str, float]:
    """Our metrics of one record -> measurements.csv columns (see the module docstring)."""
    cross_entropy = any(_split(n)[1] in ("accuracy", "perplexity") for n in metrics)
    columns = {}
    for name, value in metrics.items():
        split, rest = _split(name)
        if split is None:
            columns[name] = value
            continue
        value = np.nan if value is None else float(value)
        prefix = SPLIT_TO_THEIRS[split] + "/"
        has_data_loss = f"{split}_data_loss" in metrics
        if rest == "accuracy":
            columns[prefix + "classification_error"] = 1.0 - value
        elif cross_entropy and ((rest == "loss" and not has_data_loss) or rest == "data_loss"):
            columns[prefix + "cross_entropy_error"] = value
        else:
            columns[prefix + rest] = value
    return columns


def columns_to_metrics(row: dict, perplexity: bool = False) -> Dict[str, Optional[float]]:
    """measurements.csv columns of one step -> our metric names; NaN becomes None."""
    metrics = {}
    for column, value in row.items():
        if column == "step" or column in CURVE_COLUMNS.values() or "/" not in column:
            continue
        theirs, rest = column.split("/", 1)
        if theirs not in SPLIT_FROM_THEIRS:
            continue
        split = SPLIT_FROM_THEIRS[theirs]
        value = None if value is None or not np.isfinite(value) else float(value)
        if rest == "classification_error":
            metrics[f"{split}_accuracy"] = None if value is None else 1.0 - value
        elif rest == "cross_entropy_error":
            loss_name = "data_loss" if f"{theirs}/loss" in row else "loss"
            metrics[f"{split}_{loss_name}"] = value
            if perplexity and f"{theirs}/perplexity" not in row:
                metrics[f"{split}_perplexity"] = (
                    None if value is None or value > 700 else math.exp(value))
        else:
            metrics[f"{split}_{rest}"] = value
    return metrics


# ------------------------------------------------------------------------------ export


def _tensorboard_curves(workdir: str, cell_id: str) -> Dict[int, dict]:
    """step -> {column: value} from the cell's TensorBoard run (curve tags only)."""
    # The sweep groups runs as tensorboard/<optimizer>_B<B>/<cell_id> (summaries.run_name);
    # older work directories hold tensorboard/<cell_id>.
    run_dir = os.path.join(workdir, "tensorboard", "_".join(cell_id.split("_")[:2]), cell_id)
    if not os.path.isdir(run_dir):
        run_dir = os.path.join(workdir, "tensorboard", cell_id)
    if not os.path.isdir(run_dir):
        return {}
    import tensorflow as tf  # only when there are logs to read
    from tensorflow.core.util import event_pb2

    rows = collections.defaultdict(dict)
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" not in name:
            continue
        for raw in tf.data.TFRecordDataset(os.path.join(run_dir, name)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag not in CURVE_COLUMNS:
                    continue
                number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                          else float(value.simple_value))
                rows[int(event.step)][CURVE_COLUMNS[value.tag]] = number
    return dict(rows)


def _write_json(path: str, data: dict) -> None:
    atomic.write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def export(workdir: str, out_dir: str, records: Optional[List[dict]] = None,
           config: Optional[dict] = None, scalars: bool = True) -> List[str]:
    """Writes a sweep's ledger as batch_science studies, one trial per cell.

    Args:
      workdir: the sweep's work directory (config.json, ledger/, tensorboard/).
      out_dir: root of the export; studies go to <dataset>/<model>/<optimizer>/<B>/, under
        an extra epochs_<E>/ folder when the sweep has several epoch budgets.
      records, config: default ledger.read(workdir) and <workdir>/config.json.
      scalars: also write each cell's TensorBoard curves as rows of measurements.csv.

    Returns:
      The study directories written.
    """
    records = ledger.read(workdir) if records is None else list(records)
    if config is None:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
    if not records:
        raise ValueError(f"{workdir} has no ledger records to export; run the sweep first")
    dataset = (config.get("data") or {}).get("name") or "dataset"
    model = (config.get("model") or {}).get("name") or "model"
    groups = collections.defaultdict(list)
    for record in records:
        h = record["hparams"]
        groups[(h["optimizer"], int(h["batch_size"]), float(h["epochs"]))].append(record)
    several_budgets = len({key[2] for key in groups}) > 1
    written = []
    for (optimizer, batch_size, epochs), members in sorted(groups.items()):
        parts = [out_dir] + ([f"epochs_{epochs:g}"] if several_budgets else [])
        study_dir = os.path.join(*parts, dataset, model, optimizer, str(batch_size))
        if os.path.exists(os.path.join(study_dir, "study.json")):
            raise ValueError(f"{study_dir} already holds a study; export into a new --out")
        members.sort(key=lambda r: (r["hparams"]["effective_lr"], r["hparams"]["seed"]))
        momentum = float(members[0]["hparams"].get("momentum") or 0.0)
        parameter_configs = {
            "learning_rate": {"type": "DISCRETE", "feasible_points": sorted(
                {float(r["hparams"]["learning_rate"]) for r in members})},
            "seed": {"type": "DISCRETE",
                     "feasible_points": sorted({int(r["hparams"]["seed"]) for r in members})}}
        if momentum:
            parameter_configs["momentum"] = {"type": "DISCRETE", "feasible_points": [momentum]}
        _write_json(os.path.join(study_dir, "study.json"), {
            "batch_size": batch_size, "dataset": dataset, "early_stopping": False,
            "model": model, "optimizer": optimizer, "parameter_configs": parameter_configs,
            "train_steps": max(int(r["hparams"]["steps"]) for r in members),
            "_tf_sgd_regimes": {"experiment": config.get("name", ""), "epochs": epochs,
                                "analysis": config.get("analysis")}})
        for trial_id, record in enumerate(members, start=1):
            _export_trial(workdir, study_dir, trial_id, record, scalars)
        written.append(study_dir)
    return written


def _export_trial(workdir, study_dir, trial_id, record, scalars) -> None:
    h = record["hparams"]
    trial_dir = os.path.join(study_dir, str(trial_id))
    parameters = {"learning_rate": float(h["learning_rate"]), "seed": int(h["seed"])}
    if float(h.get("momentum") or 0.0):
        parameters["momentum"] = float(h["momentum"])
    steps = int(record.get("steps_done") or h["steps"])
    _write_json(os.path.join(trial_dir, "metadata.json"), {
        "_internal_study_name": f"{record.get('experiment', '')}-{h['optimizer']}"
                                f"-bs{h['batch_size']}",
        "_internal_trial_id": trial_id, "parameters": parameters,
        "status": STATUS_TO_THEIRS[record["status"]], "steps": steps, "trial_id": trial_id,
        "_cell_id": record["cell_id"], "_epochs": float(h["epochs"]),
        "_effective_learning_rate": float(h["effective_lr"]),
        "_diverged_step": record.get("diverged_step"), "_error": record.get("error")})
    rows = _tensorboard_curves(workdir, record["cell_id"]) if scalars else {}
    rows = {step: dict(values) for step, values in rows.items()}
    rows.setdefault(steps, {}).update(metrics_to_columns(record.get("metrics") or {}))
    frame = pd.DataFrame([dict(step=step, **values) for step, values in sorted(rows.items())])
    columns = ["step"] + sorted(c for c in frame.columns if c != "step")
    frame[columns].to_csv(os.path.join(trial_dir, "measurements.csv"), index=False)


# ------------------------------------------------------------------------------ import


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read as batch_science JSON ({e})") from e


def find_studies(root: str) -> List[str]:
    """Every directory under `root` (itself included) that holds a study.json, sorted."""
    if not os.path.isdir(root):
        raise ValueError(f"--study={root} is not a directory")
    found = sorted(d for d, _, files in os.walk(root) if "study.json" in files)
    if not found:
        raise ValueError(f"no study.json under {root}; point --study at a batch_science "
                         "study, workload (dataset/model/optimizer) or export root")
    return found


def _trial_dirs(study_dir: str) -> List[str]:
    names = [n for n in os.listdir(study_dir)
             if os.path.isfile(os.path.join(study_dir, n, "metadata.json"))]
    return sorted(names, key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))


def cell_id(optimizer, batch_size, effective_lr, epochs, seed) -> str:
    """The sweep's cell id format (grid.Cell.cell_id), so imported files read alike."""
    return f"{optimizer}_B{batch_size:05d}_lr{effective_lr:.6g}_E{epochs:.6g}_s{seed}"


def read_study(study_dir: str, perplexity: bool = False,
               num_train_examples: int = 0) -> List[dict]:
    """Records (our ledger schema) of one batch_science study directory."""
    study = _read_json(os.path.join(study_dir, "study.json"))
    for field in ("batch_size", "optimizer", "dataset", "model"):
        if field not in study:
            raise ValueError(f"{study_dir}/study.json has no {field!r} field")
    ours = study.get("_tf_sgd_regimes") or {}
    batch_size, optimizer = int(study["batch_size"]), str(study["optimizer"])
    records = []
    for name in _trial_dirs(study_dir):
        trial_dir = os.path.join(study_dir, name)
        meta = _read_json(os.path.join(trial_dir, "metadata.json"))
        parameters = meta.get("parameters") or {}
        if "learning_rate" not in parameters:
            raise ValueError(f"{trial_dir}/metadata.json has no parameters.learning_rate")
        if meta.get("status") not in STATUS_FROM_THEIRS:
            raise ValueError(f"{trial_dir}/metadata.json: status {meta.get('status')!r} not in "
                             f"{sorted(STATUS_FROM_THEIRS)}")
        status = STATUS_FROM_THEIRS[meta["status"]]
        learning_rate = float(parameters["learning_rate"])
        momentum = float(parameters.get("momentum", 0.0))
        effective_lr = float(f"{learning_rate / (1.0 - momentum):.12g}")
        trial_id = int(meta.get("trial_id", name))
        seed = int(parameters.get("seed", trial_id))
        train_steps = int(study.get("train_steps") or 0)
        steps = int(meta.get("steps") or 0)
        if "_epochs" in meta:
            epochs = float(meta["_epochs"])
        elif num_train_examples:
            epochs = (train_steps or steps) * batch_size / float(num_train_examples)
        else:
            epochs = 0.0  # unknown without the training set size: one budget per study
        path = os.path.join(trial_dir, "measurements.csv")
        frame = pd.read_csv(path) if os.path.exists(path) else pd.DataFrame()
        metrics = {}
        if len(frame):
            if "step" not in frame:
                raise ValueError(f"{path} has no 'step' column")
            last = frame.sort_values("step", kind="stable").iloc[-1]
            metrics = columns_to_metrics(last.to_dict(), perplexity)
            steps = steps or int(last["step"])
        if status == "diverged":
            metrics = {k: None for k in metrics}
        elif status == "failed":
            metrics = {}
        records.append({
            "cell_id": meta.get("_cell_id") or cell_id(optimizer, batch_size, effective_lr,
                                                       epochs, seed),
            "experiment": ours.get("experiment") or
            f"batch_science/{study['dataset']}/{study['model']}",
            "status": status,
            "hparams": {"optimizer": optimizer, "momentum": momentum, "batch_size": batch_size,
                        "effective_lr": effective_lr, "learning_rate": learning_rate,
                        "seed": seed, "epochs": epochs, "steps": train_steps or steps},
            "metrics": metrics,
            "diverged_step": meta.get("_diverged_step", steps if status == "diverged" else None),
            "error": meta.get("_error") or ("INCOMPLETE in the batch_science data"
                                            if status == "failed" else None),
            "steps_done": steps, "attempt": 1, "wall_time_s": None, "config_hash": "",
            "versions": {}, "pack_id": None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "source": {"study": os.path.abspath(study_dir), "trial_id": trial_id}})
    return records


def _default_analysis(records: List[dict], selection_metric: Optional[str]) -> dict:
    names = {m for r in records for m in r["metrics"]}
    choices = ["test_accuracy", "validation_accuracy", "test_perplexity",
               "validation_perplexity", "test_mse", "test_loss", "validation_loss"]
    metric = selection_metric or next((m for m in choices if m in names), None)
    if metric is None or metric not in names:
        raise ValueError(f"selection metric {metric!r} is not among the imported metrics "
                         f"{sorted(names)}; pass --selection_metric")
    runs = collections.Counter((r["hparams"]["optimizer"], r["hparams"]["batch_size"],
                                r["hparams"]["epochs"], r["hparams"]["effective_lr"])
                               for r in records)
    most = max(runs.values())
    return {"selection_metric": metric, "selection_mode": analysis.metric_mode(metric),
            "train_metric": "train_loss", "best_k": most, "num_seeds": most,
            "range_rule_std": 1.0, "split": "validation" if metric.startswith("validation_")
            else "test", "paper_reference": ""}


def import_studies(study: str, workdir: str, perplexity: bool = False,
                   num_train_examples: int = 0,
                   selection_metric: Optional[str] = None) -> List[dict]:
    """Reads batch_science studies of one workload into a work directory.

    Writes <workdir>/ledger/ (one record per trial; trials already there are kept) and a
    <workdir>/config.json that `report` reads (analysis settings: ours when the data came
    from our exporter, else best 1 of n with the first available of test/validation
    accuracy, perplexity, MSE or loss; the sweep grid only when the trials form a product).

    Returns:
      All records of the work directory.
    """
    studies = [(d, _read_json(os.path.join(d, "study.json"))) for d in find_studies(study)]
    workloads = sorted({(s["dataset"], s["model"]) for _, s in studies})
    if len(workloads) > 1:
        raise ValueError(f"{study} holds several workloads {workloads}; import one "
                         "dataset/model at a time (point --study at its folder)")
    records = []
    for directory, _ in studies:
        records.extend(read_study(directory, perplexity, num_train_examples))
    if not records:
        raise ValueError(f"no trials under {study}")
    ids = collections.Counter(r["cell_id"] for r in records)
    clashes = sorted(i for i, n in ids.items() if n > 1)
    if clashes:
        raise ValueError(f"trials map to the same cell {clashes[:3]}; pass "
                         "--num_train_examples so their epoch budgets tell them apart")
    for record in records:
        ledger.append(workdir, record)
    exported = next((s.get("_tf_sgd_regimes") for _, s in studies
                     if (s.get("_tf_sgd_regimes") or {}).get("analysis")), None)
    settings = exported["analysis"] if exported else _default_analysis(records,
                                                                        selection_metric)
    if selection_metric:
        settings = dict(settings, selection_metric=selection_metric,
                        selection_mode=analysis.metric_mode(selection_metric))
    dataset, model = workloads[0]
    grid = {key: sorted({r["hparams"][field] for r in records}) for key, field in (
        ("optimizers", "optimizer"), ("batch_sizes", "batch_size"),
        ("effective_lrs", "effective_lr"), ("seeds", "seed"))}
    budgets = sorted({r["hparams"]["epochs"] for r in records})
    sweep = dict(grid, epoch_budgets=budgets if len(budgets) > 1 else [])
    if len(records) != int(np.prod([len(v) for v in grid.values()])) * len(budgets):
        sweep = {k: v for k, v in sweep.items() if k not in ("effective_lrs", "seeds")}
    config = {"name": (exported or {}).get("experiment") or f"batch_science_{dataset}_{model}",
              "description": f"imported from the batch_science layout at {os.path.abspath(study)}",
              "data": {"name": dataset}, "model": {"name": model}, "analysis": settings,
              "sweep": sweep}
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), config)
    return ledger.read(workdir)


# --------------------------------------------------------------------------------- CLI


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    if values["export"].value == values["import"].value:
        raise SystemExit("pass exactly one of --export (with --workdir, --out) or --import "
                         "(with --study, --workdir)")
    if not values.workdir:
        raise SystemExit("--workdir is required")
    try:
        if values["export"].value:
            if not values.out:
                raise SystemExit("--export needs --out=DIR, where the studies are written")
            written = export(values.workdir, values.out, scalars=values.scalars)
            print(f"[batch_science] wrote {len(written)} studies under {values.out}")
        else:
            if not values.study:
                raise SystemExit("--import needs --study=DIR (a study, workload or export root)")
            records = import_studies(values.study, values.workdir, values.perplexity,
                                     values.num_train_examples,
                                     values.selection_metric or None)
            print(f"[batch_science] {len(records)} records in {values.workdir}; report with: "
                  f"python -m tf_sgd_regimes.report --workdir={values.workdir}")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def entry_point():
    from absl import app, flags

    flags.DEFINE_bool("export", False, "Write a sweep's ledger (--workdir) as studies (--out).")
    flags.DEFINE_bool("import", False, "Read studies (--study) into a work directory.")
    flags.DEFINE_string("workdir", None, "Our work directory (read on export, written on "
                        "import).")
    flags.DEFINE_string("out", None, "Export root for the studies.")
    flags.DEFINE_string("study", None, "A study, workload or export root to import.")
    flags.DEFINE_bool("scalars", True, "Export: include TensorBoard curves as extra rows.")
    flags.DEFINE_bool("perplexity", False, "Import: add <split>_perplexity = exp(cross "
                      "entropy) (language models).")
    flags.DEFINE_integer("num_train_examples", 0, "Import: training set size, to turn their "
                         "steps into epoch budgets (0: unknown).")
    flags.DEFINE_string("selection_metric", "", "Import: metric the analysis selects on.")
    app.run(main)


if __name__ == "__main__":
    entry_point()

"""Experiments by name: config lookup, overrides, validation with clear errors."""

import ast
import copy
import difflib
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import sys
from typing import Callable, Dict, Iterable, List, Optional

import ml_collections

DEFAULT_EXPERIMENT = "digits_mlp_epoch_budget"

# name -> function returning the experiment's ConfigDict. The package's experiments are
# registered on first lookup from its config modules (below); yours with
# register_experiment, from any file.
_EXPERIMENTS: Dict[str, Callable[[], ml_collections.ConfigDict]] = {}
# Every module under tf_sgd_regimes.configs (but `common`) holds experiments: a module with
# several keeps them in `_VARIANTS` (name -> config function), so each name is written
# once, there; a module with one is named by its get_config().name. A new module is found
# without an edit here.
_SHARED_MODULES = ("common",)
# configs/nqm.py takes a budget rather than a variant name.
_NQM = {"nqm_epoch_budget": "epochs", "nqm_step_budget": "steps",
        "nqm_epoch_budget_sweep": "variable"}
_package_registered = False


class ConfigError(ValueError):
    """A config or override that cannot run; the message names the field."""


def register_experiment(name: str, get_config_fn: Callable[[], ml_collections.ConfigDict],
                        replace: bool = False) -> str:
    """Registers an experiment: `get_config_fn()` returns its ConfigDict. Returns the name."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_experiment: name must be a non-empty string, got {name!r}")
    if not callable(get_config_fn):
        raise ConfigError(f"register_experiment({name!r}): get_config_fn must be callable")
    old = _EXPERIMENTS.get(name)
    if (old is not None and not replace and origin(old) != origin(get_config_fn)):
        raise ConfigError(f"experiment {name!r} is already registered ({origin(old)}); pick "
                         "another name or pass replace=True")
    _EXPERIMENTS[name] = get_config_fn
    return name


def origin(fn) -> str:
    """Where a registered function comes from (module.qualname): re-registering from the
    same origin (a re-run notebook cell or file) is allowed, another origin is a clash."""
    fn = getattr(fn, "func", fn)  # a functools.partial names its function
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _register_package() -> None:
    global _package_registered
    if _package_registered:
        return
    _package_registered = True
    import pkgutil

    from tf_sgd_regimes import configs

    for info in sorted(pkgutil.iter_modules(configs.__path__), key=lambda m: m.name):
        module_name = info.name
        if module_name in _SHARED_MODULES or module_name.startswith("_"):
            continue
        module = importlib.import_module(f"tf_sgd_regimes.configs.{module_name}")
        if not hasattr(module, "get_config"):
            continue  # a helper module, not an experiment
        if module_name == "nqm":
            for name, budget in _NQM.items():
                register_experiment(name, functools.partial(module.get_config, budget=budget))
            continue
        variants = getattr(module, "_VARIANTS", None)
        if variants:
            for name in variants:
                register_experiment(name, functools.partial(module.get_config, variant=name))
        else:
            register_experiment(module.get_config().name, module.get_config)


def names() -> List[str]:
    _register_package()
    return sorted(_EXPERIMENTS)


def get_config(name: str) -> ml_collections.ConfigDict:
    """The unlocked ConfigDict of a registered experiment."""
    _register_package()
    if name not in _EXPERIMENTS:
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ConfigError(f"unknown experiment {name!r}.{hint} Known: {names()} "
                          "(python -m tf_sgd_regimes.run --experiment=list describes them)")
    config = _unlocked(_EXPERIMENTS[name](), f"experiment {name!r}")
    config.name = name
    return config


def _unlocked(config, where: str) -> ml_collections.ConfigDict:
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{where}: get_config() returned a {type(config).__name__}, not an "
                          "ml_collections.ConfigDict (start from tf_sgd_regimes.base_config())")
    config = copy.deepcopy(config)
    config.unlock()
    return config


def base_config(task: str = "classification") -> ml_collections.ConfigDict:
    """Every field an experiment has, with the paper's defaults, for your own config.

    The analysis selects on `task`'s default metric (test accuracy, test perplexity, test
    MSE, or a registered tasks.Task's selection); set config.model.name, config.data.name,
    the budget and the grid (config.sweep) yourself.
    """
    from tf_sgd_regimes import tasks  # loads TensorFlow
    from tf_sgd_regimes.configs import common

    task = tasks.resolve(task)
    config = common.base_config()
    config.analysis.selection_metric, config.analysis.selection_mode = tasks.selection(task)
    config.analysis.train_metric = "train_loss"
    config.budget.epochs = 1.0
    return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """The config of `path/to/file.py[:variant]` (ml_collections' config_flags convention).

    The file is run as a module (its directory on sys.path, so it can import its
    neighbours, which may register models and data sets); `get_config()` or, with
    `:variant`, `get_config(variant)` returns the config. Its name defaults to the file's.
    """
    path, _, variant = spec.partition(":")
    if not path.endswith(".py") or not os.path.isfile(path):
        raise ConfigError(f"--config={spec}: {path!r} is not a Python file; expected "
                          "--config=path/to/my_experiment.py[:variant]")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    stem = os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(f"_tf_sgd_regimes_config_{stem}",
                                                         os.path.abspath(path))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)  # errors in the user's file propagate as they are
    get = getattr(module, "get_config", None)
    if get is None:
        raise ConfigError(f"--config={spec}: {path} defines no get_config() function")
    config = _unlocked(get(variant) if variant else get(), f"--config={spec}")
    if not config.get("name"):
        config.name = f"{stem}_{variant}" if variant else stem
    return config


def resolve_config(spec: str) -> ml_collections.ConfigDict:
    """A registered experiment's name, or a config file path[:variant]."""
    path = spec.partition(":")[0]
    if path.endswith(".py") or os.sep in path:
        return load_config_file(spec)
    return get_config(spec)


def describe() -> str:
    """One line per experiment: name, description, expected cost."""
    lines = []
    for name in names():
        config = get_config(name)
        lines.append(f"{name:40s} {config.description}  [{config.cost}]")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's experiment table, rendered from the registry (a test keeps them equal)."""
    lines = ["| experiment | what | expected cost |", "|---|---|---|"]
    for name in names():
        config = get_config(name)
        lines.append(f"| `{name}` | {config.description} | {config.cost} |")
    return "\n".join(lines)


# Fields that are True, False or "auto" (decided at run time). Their overrides parse as
# booleans: the string "False" must never reach a truth test, where it would mean True.
TRI_STATE_FIELDS = ("train.jit_compile",)

# Fields that are an integer >= 1 or "auto" (decided at run time, e.g. from whether the
# step runs under XLA). Overrides parse as one of the two, never as a free string.
AUTO_INT_FIELDS = ("train.unroll_steps",)

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def tri_state(value, field: str):
    """True, False or "auto" from a bool or a case-insensitive string; else ConfigError."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower() if isinstance(value, str) else None
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    if lowered == "auto":
        return "auto"
    raise ConfigError(f"config.{field}={value!r}: expected true, false or auto")


def auto_or_count(value, field: str):
    """"auto" (any case) or an integer >= 1, from an int or a string; else ConfigError."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        value = int(text) if text.isdigit() else text
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"config.{field}={value!r}: expected auto or an integer >= 1")


def _parse_value(text: str, current, field: str):
    """Parses an override string into the type of the field's current value."""
    if field in TRI_STATE_FIELDS:
        return tri_state(text, field)
    if field in AUTO_INT_FIELDS:
        return auto_or_count(text, field)
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"override {field}={text!r}: expected true/false")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"override {field}={text!r}: expected a number") from None
        if isinstance(current, int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"override {field}={text!r}: expected a number")
        if isinstance(current, int) and not isinstance(value, int):
            raise ConfigError(f"override {field}={text!r}: expected an integer")
        return type(current)(value)
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"override {field}={text!r}: expected a list, e.g. "
                              f"'(1, 2, 4)'") from None
        if isinstance(value, (int, float, str)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"override {field}={text!r}: expected a list")
        return tuple(value)
    if current is None or isinstance(current, str):
        return text
    raise ConfigError(f"override {field}: cannot override a field of type "
                      f"{type(current).__name__}")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies "a.b=value" overrides (from --config.a.b=value) and locks the config."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r}: expected --config.FIELD=VALUE")
        field, text = override.split("=", 1)
        field = field.strip()
        if field.startswith("--config."):
            field = field[len("--config."):]
        parent, key = config, field
        parts = field.split(".")
        for i, part in enumerate(parts[:-1]):
            child = parent.get(part) if isinstance(parent, ml_collections.ConfigDict) else None
            if not isinstance(child, ml_collections.ConfigDict):
                raise ConfigError(_unknown_field(config, ".".join(parts[: i + 1])))
            parent = child
        key = parts[-1]
        if key not in parent:
            raise ConfigError(_unknown_field(config, field))
        value = _parse_value(text, parent[key], field)
        if field in TRI_STATE_FIELDS + AUTO_INT_FIELDS:  # "auto" is a str: the type may change
            with parent.ignore_type():
                parent[key] = value
        else:
            parent[key] = value
    config.lock()
    return config


def _flat_fields(config, prefix="") -> List[str]:
    fields = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            fields.extend(_flat_fields(value, name + "."))
        else:
            fields.append(name)
    return fields


def _unknown_field(config, field: str) -> str:
    known = _flat_fields(config)
    close = difflib.get_close_matches(field, known, n=3)
    hint = f" Did you mean {close}?" if close else ""
    return f"unknown config field {field!r}.{hint} Fields: {', '.join(sorted(known))}"


def validate(config: ml_collections.ConfigDict, num_train: int = 0, replicas: int = 1,
             task: Optional[str] = None, split: Optional[str] = None) -> None:
    """Refuses a config that cannot run, before any compute. Messages name the field.

    Args:
      num_train, replicas: the data set's size and the strategy's replicas, when known.
      task, split: the loaded data set's task and evaluation split, when known; then the
        model's task must match and the analysis metrics must be the task's.
    """
    # Imported here: optimizers loads TensorFlow, and --list and bad overrides should
    # answer in a second, before it loads.
    from tf_sgd_regimes import optimizers

    _validate_workload(config, task, split)

    sweep = config.sweep
    if not sweep.optimizers:
        raise ConfigError("config.sweep.optimizers is empty; use e.g. ('sgd', 'momentum')")
    for name in sweep.optimizers:
        if name not in optimizers.OPTIMIZERS:
            raise ConfigError(f"config.sweep.optimizers: unknown optimizer {name!r}; "
                              f"known: {sorted(optimizers.OPTIMIZERS)}")
    if not 0 <= sweep.momentum < 1:
        raise ConfigError(f"config.sweep.momentum={sweep.momentum}: must be in [0, 1)")
    _positive_list(sweep.batch_sizes, "config.sweep.batch_sizes", integer=True)
    if sweep.get("pack_order", "ascending") not in PACK_ORDERS:
        raise ConfigError(f"config.sweep.pack_order={sweep.pack_order!r}: use one of "
                          f"{PACK_ORDERS}")
    _positive_list(sweep.effective_lrs, "config.sweep.effective_lrs")
    if not sweep.seeds:
        raise ConfigError("config.sweep.seeds is empty")
    if len(set(sweep.seeds)) != len(sweep.seeds):
        raise ConfigError(f"config.sweep.seeds has duplicates: {sweep.seeds}")
    if sweep.epoch_budgets:
        _positive_list(sweep.epoch_budgets, "config.sweep.epoch_budgets")
    budget = config.budget
    if budget.kind not in ("epochs", "steps"):
        raise ConfigError(f"config.budget.kind={budget.kind!r}: use 'epochs' or 'steps'")
    if budget.kind == "epochs" and budget.epochs <= 0 and not sweep.epoch_budgets:
        raise ConfigError(f"config.budget.epochs={budget.epochs}: must be > 0")
    if budget.kind == "steps" and budget.steps <= 0:
        raise ConfigError(f"config.budget.steps={budget.steps}: must be > 0")
    for batch_size in sweep.batch_sizes:
        if num_train and batch_size > num_train:
            raise ConfigError(
                f"config.sweep.batch_sizes: batch size {batch_size} is larger than the "
                f"training set ({num_train} examples); drop it from the sweep")
        if batch_size % replicas:
            raise ConfigError(
                f"config.sweep.batch_sizes: batch size {batch_size} is not divisible by the "
                f"{replicas} replicas; the batch size is the global batch")
    schedule = config.schedule
    if schedule.decay_factor < 1:
        raise ConfigError(f"config.schedule.decay_factor={schedule.decay_factor}: must be >= 1 "
                          "(the learning rate is divided by it)")
    if schedule.warmup_steps < 0:
        raise ConfigError(f"config.schedule.warmup_steps={schedule.warmup_steps}: must be >= 0")
    tree = config.to_dict()
    for field in TRI_STATE_FIELDS:
        if _get(tree, field) != {}:  # {}: the config has no such field
            tri_state(_get(tree, field), field)
    for field in AUTO_INT_FIELDS:
        if _get(tree, field) != {}:
            auto_or_count(_get(tree, field), field)
    if config.train.steps_per_call < 1:
        raise ConfigError("config.train.steps_per_call must be >= 1")
    from tf_sgd_regimes import cpu_threads

    try:
        cpu_threads.requested(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    tensorboard = config.get("tensorboard") or {}
    limit = tensorboard.get("per_cell_sessions_max", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(
            f"config.tensorboard.per_cell_sessions_max must be an integer >= 0 (got "
            f"{limit!r}): the largest sweep that gets one TensorBoard session per cell")
    if config.l2 < 0:
        raise ConfigError(f"config.l2={config.l2}: must be >= 0")
    analysis = config.analysis
    if not 1 <= analysis.best_k <= len(sweep.seeds):
        raise ConfigError(f"config.analysis.best_k={analysis.best_k}: must be between 1 and "
                          f"the number of seeds ({len(sweep.seeds)})")


def _validate_workload(config, task: Optional[str], split: Optional[str]) -> None:
    """Model, data set, task and metric names, checked against the registries."""
    if config.get("engine", "keras") != "keras":
        return  # the noisy quadratic model has no model, data set or task to look up
    from tf_sgd_regimes import data
    from tf_sgd_regimes import models
    from tf_sgd_regimes import tasks

    if not config.model.name:
        raise ConfigError(f"config.model.name is empty; known models: {models.names()}")
    if not config.data.name:
        raise ConfigError(f"config.data.name is empty; known data sets: {data.names()}")
    models.record(config.model.name)  # ConfigError listing the known models
    data.check_name(config.data.name)
    model_task = models.task_of(config.model.name)
    if task is None:
        return  # the task and its metrics are checked once the data set is loaded
    if task != model_task:
        raise ConfigError(
            f"config.model.name={config.model.name!r} is registered for task {model_task!r} "
            f"but data set {config.data.name!r} has task {task!r}; use a model registered for "
            f"{task!r} (register_model(name, build_fn, task={task!r}) also accepts a builder "
            "that is registered under another name)")
    if task not in tasks.names():
        raise ConfigError(f"task {task!r} of data set {config.data.name!r} is unknown; known "
                          f"tasks: {tasks.names()}")
    split = split or config.analysis.split
    known = tasks.metric_names(task, split)
    # Added by the engine beside the task's own metrics (L2 runs, the noise probe).
    extra = ["train_data_loss", "noise_scale_init", "noise_scale_mid"]
    for field in ("selection_metric", "train_metric"):
        metric = config.analysis[field]
        if metric not in known + extra:
            default, _ = tasks.selection(task, split)
            raise ConfigError(
                f"config.analysis.{field}={metric!r} is not a metric of task {task!r} on the "
                f"{split} split; its metrics: {known} (the task's default selection metric "
                f"is {default!r})")
    if config.analysis.selection_mode not in ("min", "max"):
        raise ConfigError(f"config.analysis.selection_mode={config.analysis.selection_mode!r}: "
                          "use 'min' or 'max'")


def _positive_list(values, field: str, integer: bool = False) -> None:
    if not values:
        raise ConfigError(f"{field} is empty")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{field}: {value!r} must be a positive number")
        if integer and int(value) != value:
            raise ConfigError(f"{field}: {value!r} must be a whole number")


# sweep.pack_order's values (sweep/grid.py's batch_size_order; not imported from there,
# which would load keras-tuner to validate a config).
PACK_ORDERS = ("spread", "ascending")

# Fields that may grow on resume without changing what any finished cell means.
GRID_FIELDS = ("sweep.batch_sizes", "sweep.effective_lrs", "sweep.seeds",
               "sweep.epoch_budgets", "sweep.optimizers")
# Fields that only change how fast or where cells run, or how they are analysed.
RUN_ONLY_FIELDS = ("sweep.pack_size", "sweep.pack_order", "sweep.extend_edges",
                   "train.steps_per_call", "train.eval_batch_size", "train.log_every_steps",
                   "train.intra_op_threads", "train.member_shards",
                   "train.checkpoint_every_s", "train.noise_scale", "strategy", "tpu_address",
                   "cost", "description", "analysis", "tensorboard")


def _without(config_dict: dict, fields) -> dict:
    out = json.loads(json.dumps(config_dict))
    for field in fields:
        parent = out
        parts = field.split(".")
        for part in parts[:-1]:
            parent = parent.get(part, {})
        parent.pop(parts[-1], None)
    return out


def config_hash(config, data_fingerprint: Optional[dict] = None) -> str:
    """Hash of what a cell's result depends on (grid and run-only fields excluded), and of
    the data set's content when its fingerprint (data.fingerprint) is given."""
    plain = _without(to_dict(config), GRID_FIELDS + RUN_ONLY_FIELDS)
    if data_fingerprint is not None:
        plain["data_fingerprint"] = data_fingerprint["hash"]
    text = json.dumps(plain, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_dict(config) -> dict:
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort(sort_keys=True))
    return json.loads(json.dumps(config))


def compare_for_resume(saved: dict, config) -> str:
    """Why `config` cannot resume the sweep saved as `saved`; "" if it can.

    Accepted: the same config, or one whose grid only grew (new learning rates, batch
    sizes, seeds, budgets, optimizers): finished cells keep their meaning and only the
    new cells run. Refused: any change to a field a finished cell depended on, or a grid
    that lost values (their records would silently leave the analysis).
    """
    current = to_dict(config)
    if config_hash(saved) != config_hash(current):
        a = _without(saved, GRID_FIELDS + RUN_ONLY_FIELDS)
        b = _without(current, GRID_FIELDS + RUN_ONLY_FIELDS)
        changed = sorted(_diff_fields(a, b))
        return f"the config differs from the saved sweep in: {', '.join(changed)}"
    for field in GRID_FIELDS:
        old = set(_get(saved, field) or ())
        new = set(_get(current, field) or ())
        if not old <= new:
            return f"{field} dropped values {sorted(old - new)} that the saved sweep has"
    return ""


def _get(tree: dict, field: str):
    for part in field.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def _diff_fields(a, b, prefix=""):
    keys = set(a) | set(b)
    for key in keys:
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            yield from _diff_fields(va, vb, name + ".")
        elif va != vb:
            yield name

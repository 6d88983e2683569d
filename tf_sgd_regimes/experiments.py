"""Experiments by name: config lookup, overrides, validation with clear errors."""

import ast
import difflib
import hashlib
import importlib
import json
from typing import Dict, Iterable, List, Tuple

import ml_collections

DEFAULT_EXPERIMENT = "digits_mlp_epoch_budget"

# name -> (module under tf_sgd_regimes.configs, keyword arguments of its get_config).
_EXPERIMENTS: Dict[str, Tuple[str, dict]] = {
    "digits_mlp_epoch_budget": ("digits_mlp", {}),
    "nqm_epoch_budget": ("nqm", {"budget": "epochs"}),
    "nqm_step_budget": ("nqm", {"budget": "steps"}),
    "nqm_epoch_budget_sweep": ("nqm", {"budget": "variable"}),
    # The paper's experiments (configs/wrn_cifar.py, resnet_imagenet.py, ptb_lstm.py,
    # mnist_autoencoder.py) and their embedded CPU-sized versions (configs/embedded.py).
    **{name: ("wrn_cifar", {"variant": name}) for name in (
        "wrn16_4_cifar10_epoch_budget", "wrn16_4_cifar10_lr_sweep",
        "wrn16_4_cifar10_skipinit_epoch_budget", "wrn16_4_cifar10_skipinit_step_budget",
        "wrn28_10_cifar100_step_budget", "wrn28_10_cifar100_skipinit_step_budget")},
    "resnet50_imagenet_epoch_budget": ("resnet_imagenet", {}),
    **{name: ("ptb_lstm", {"variant": name}) for name in (
        "ptb_lstm_epoch_budget", "ptb_lstm_step_budget", "ptb_lstm_variable_epoch_budget")},
    **{name: ("mnist_autoencoder", {"variant": name}) for name in (
        "mnist_autoencoder_epoch_budget", "mnist_autoencoder_step_budget",
        "mnist_autoencoder_variable_epoch_budget")},
    **{name: ("embedded", {"variant": name}) for name in (
        "digits_cnn_epoch_budget", "digits_wrn_epoch_budget",
        "digits_autoencoder_epoch_budget", "synthetic_lstm_epoch_budget")},
}


class ConfigError(ValueError):
    """A config or override that cannot run; the message names the field."""


def names() -> List[str]:
    return sorted(_EXPERIMENTS)


def get_config(name: str) -> ml_collections.ConfigDict:
    """The unlocked ConfigDict of a registered experiment."""
    if name not in _EXPERIMENTS:
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ConfigError(f"unknown experiment {name!r}.{hint} Known: {names()} "
                          "(python -m tf_sgd_regimes.run --experiment=list describes them)")
    module_name, kwargs = _EXPERIMENTS[name]
    module = importlib.import_module(f"tf_sgd_regimes.configs.{module_name}")
    config = module.get_config(**kwargs)
    config.name = name
    return config


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


def _parse_value(text: str, current, field: str):
    """Parses an override string into the type of the field's current value."""
    if field in TRI_STATE_FIELDS:
        return tri_state(text, field)
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
        if field in TRI_STATE_FIELDS:  # "auto" is a str, True a bool: the type may change
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


def validate(config: ml_collections.ConfigDict, num_train: int = 0, replicas: int = 1) -> None:
    """Refuses a config that cannot run, before any compute. Messages name the field."""
    # Imported here: optimizers loads TensorFlow, and --list and bad overrides should
    # answer in a second, before it loads.
    from tf_sgd_regimes import optimizers

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
    if config.train.steps_per_call < 1:
        raise ConfigError("config.train.steps_per_call must be >= 1")
    if config.l2 < 0:
        raise ConfigError(f"config.l2={config.l2}: must be >= 0")
    analysis = config.analysis
    if not 1 <= analysis.best_k <= len(sweep.seeds):
        raise ConfigError(f"config.analysis.best_k={analysis.best_k}: must be between 1 and "
                          f"the number of seeds ({len(sweep.seeds)})")


def _positive_list(values, field: str, integer: bool = False) -> None:
    if not values:
        raise ConfigError(f"{field} is empty")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{field}: {value!r} must be a positive number")
        if integer and int(value) != value:
            raise ConfigError(f"{field}: {value!r} must be a whole number")


# Fields that may grow on resume without changing what any finished cell means.
GRID_FIELDS = ("sweep.batch_sizes", "sweep.effective_lrs", "sweep.seeds",
               "sweep.epoch_budgets", "sweep.optimizers")
# Fields that only change how fast or where cells run, or how they are analysed.
RUN_ONLY_FIELDS = ("sweep.pack_size", "sweep.extend_edges", "train.steps_per_call",
                   "train.eval_batch_size", "train.log_every_steps",
                   "train.checkpoint_every_s", "train.noise_scale", "strategy", "tpu_address",
                   "cost", "description", "analysis")


def _without(config_dict: dict, fields) -> dict:
    out = json.loads(json.dumps(config_dict))
    for field in fields:
        parent = out
        parts = field.split(".")
        for part in parts[:-1]:
            parent = parent.get(part, {})
        parent.pop(parts[-1], None)
    return out


def config_hash(config) -> str:
    """Hash of what a cell's result depends on (grid and run-only fields excluded)."""
    plain = _without(to_dict(config), GRID_FIELDS + RUN_ONLY_FIELDS)
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

"""Experiments by name, --config overrides, validation and the resume check."""

import math

import pytest

from conftest import DEFAULT_EXPERIMENT, shrunk_config
from tf_sgd_regimes import experiments

ConfigError = experiments.ConfigError


def default():
    return experiments.get_config(DEFAULT_EXPERIMENT)


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        experiments.get_config("digits_mlp_epoch_budgte")
    message = str(info.value)
    assert "'digits_mlp_epoch_budgte'" in message
    for name in experiments.names():
        assert name in message


def test_every_registered_experiment_loads_and_describes_itself():
    lines = experiments.describe().splitlines()
    assert len(lines) == len(experiments.names()) >= 1
    for name, line in zip(experiments.names(), lines):
        config = experiments.get_config(name)
        assert config.name == name
        assert line.startswith(name) and config.cost in line and config.description
        experiments.validate(config)


def test_readme_lists_every_experiment_as_the_registry_describes_it():
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert experiments.markdown_table() in readme, (
        "README.md's experiment table is stale; run: python tools/gen_readme_table.py")


def test_readme_table_generator_replaces_a_stale_table_and_keeps_the_rest():
    import sys
    from conftest import REPO
    sys.path.insert(0, str(REPO / "tools"))
    import gen_readme_table

    readme = (REPO / "README.md").read_text()
    assert gen_readme_table.render(readme) == readme  # up to date: unchanged
    table = experiments.markdown_table()
    stale = readme.replace(table, table.split("\n", 1)[0] + "\n|---|---|---|\n| `gone` | x | y |")
    assert stale != readme
    assert gen_readme_table.render(stale) == readme


def test_default_experiment_matches_the_issue():
    config = default()
    sweep = config.sweep
    assert set(sweep.optimizers) == {"sgd", "momentum"} and sweep.momentum == 0.9
    batch_sizes = list(sweep.batch_sizes)
    assert len(batch_sizes) >= 8 and max(batch_sizes) == 1024
    assert all(math.log2(b).is_integer() for b in batch_sizes)
    assert all(math.log2(lr).is_integer() for lr in sweep.effective_lrs)
    assert len(sweep.seeds) >= 3 and config.budget.kind == "epochs"


@pytest.mark.parametrize("override, field, expected", [
    ("--config.sweep.seeds=(0,1)", ("sweep", "seeds"), (0, 1)),
    ("sweep.seeds=3", ("sweep", "seeds"), (3,)),
    ("--config.sweep.batch_sizes=[8, 16]", ("sweep", "batch_sizes"), (8, 16)),
    ("--config.model.hidden=(32,)", ("model", "hidden"), (32,)),
    ("--config.budget.epochs=3", ("budget", "epochs"), 3.0),
    ("--config.train.steps_per_call=8", ("train", "steps_per_call"), 8),
    ("--config.train.steps_per_call=8.0", ("train", "steps_per_call"), 8),
    ("--config.l2=5e-4", ("l2",), 5e-4),
    ("--config.data.name=digits_images", ("data", "name"), "digits_images"),
])
def test_overrides_parse_to_the_fields_type(override, field, expected):
    config = experiments.apply_overrides(default(), [override])
    value = config
    for part in field:
        value = value[part]
    assert value == expected
    assert type(value) is type(expected)


def test_unknown_field_names_it_and_close_matches():
    with pytest.raises(ConfigError) as info:
        experiments.apply_overrides(default(), ["--config.sweep.batch_size=(8,)"])
    message = str(info.value)
    assert "'sweep.batch_size'" in message and "sweep.batch_sizes" in message
    with pytest.raises(ConfigError, match="'swep'"):
        experiments.apply_overrides(default(), ["--config.swep.seeds=(1,)"])


@pytest.mark.parametrize("override, field", [
    ("--config.budget.epochs=many", "budget.epochs"),
    ("--config.train.steps_per_call=8.5", "train.steps_per_call"),
    ("--config.sweep.seeds=(0,", "sweep.seeds"),
    ("--config.l2=(1,2)", "l2"),
    ("--config.l2", "l2"),
])
def test_ill_typed_override_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        experiments.apply_overrides(default(), [override])


def test_config_is_locked_after_overrides():
    config = experiments.apply_overrides(default(), ["--config.sweep.seeds=(0,)"])
    with pytest.raises((AttributeError, KeyError)):
        config.sweep.batch_size = (8,)  # a typo must not create a new field
    with pytest.raises((AttributeError, KeyError)):
        config.new_field = 1


@pytest.mark.parametrize("overrides, num_train, replicas, field", [
    (["sweep.effective_lrs=(0.1,-0.5)"], 0, 1, "config.sweep.effective_lrs"),
    (["sweep.effective_lrs=(0.0,)"], 0, 1, "config.sweep.effective_lrs"),
    (["sweep.batch_sizes=(0,8)"], 0, 1, "config.sweep.batch_sizes"),
    (["sweep.batch_sizes=(-4,)"], 0, 1, "config.sweep.batch_sizes"),
    (["sweep.batch_sizes=(64,2048)"], 1437, 1, "config.sweep.batch_sizes"),
    (["sweep.batch_sizes=(6,3)"], 0, 2, "config.sweep.batch_sizes"),
    (["sweep.seeds=(0,1)", "analysis.best_k=3"], 0, 1, "config.analysis.best_k"),
    (["sweep.optimizers=('adam',)"], 0, 1, "config.sweep.optimizers"),
    (["sweep.momentum=1.0"], 0, 1, "config.sweep.momentum"),
    (["sweep.seeds=(0,0)", "analysis.best_k=1"], 0, 1, "config.sweep.seeds"),
])
def test_validate_refuses_configs_that_cannot_run(overrides, num_train, replicas, field):
    config = experiments.apply_overrides(default(), overrides)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        experiments.validate(config, num_train, replicas)


def test_validate_accepts_the_edges():
    config = experiments.apply_overrides(default(), ["sweep.batch_sizes=(2,1437)",
                                                     "analysis.best_k=3"])
    experiments.validate(config, num_train=1437, replicas=1)
    with pytest.raises(ConfigError, match="larger than the training set"):
        experiments.validate(config, num_train=1436, replicas=1)
    with pytest.raises(ConfigError, match="replicas"):
        experiments.validate(config, num_train=1437, replicas=2)


def saved(config):
    return experiments.to_dict(config)


def test_resume_accepts_the_same_config_and_a_grown_grid():
    old = shrunk_config()
    assert experiments.compare_for_resume(saved(old), shrunk_config()) == ""
    grown = shrunk_config(["sweep.effective_lrs=(0.0625,0.25,1.0,4.0)",
                           "sweep.batch_sizes=(32,64,128)", "sweep.seeds=(0,1,2)"])
    assert experiments.compare_for_resume(saved(old), grown) == ""
    # Run-only fields may change between runs too.
    faster = shrunk_config(["train.steps_per_call=64", "sweep.pack_size=4"])
    assert experiments.compare_for_resume(saved(old), faster) == ""


def test_resume_refuses_a_shrunk_grid_naming_the_field():
    old = shrunk_config()
    reason = experiments.compare_for_resume(
        saved(old), shrunk_config(["sweep.effective_lrs=(0.0625,0.25)"]))
    assert "sweep.effective_lrs" in reason and "1.0" in reason


@pytest.mark.parametrize("override, field", [
    ("model.hidden=(32,)", "model.hidden"),
    ("l2=0.001", "l2"),
    ("budget.epochs=2.0", "budget.epochs"),
    ("schedule.decay_factor=10.0", "schedule.decay_factor"),
])
def test_resume_refuses_a_changed_field_naming_it(override, field):
    reason = experiments.compare_for_resume(saved(shrunk_config()), shrunk_config([override]))
    assert reason and field in reason


def test_config_hash_ignores_run_only_and_grid_fields():
    base = experiments.config_hash(shrunk_config())
    assert experiments.config_hash(shrunk_config()) == base
    for override in ("train.steps_per_call=3", "sweep.pack_size=2", "train.eval_batch_size=64",
                     "train.log_every_steps=5", "strategy=cpu", "analysis.best_k=2",
                     "sweep.seeds=(0,1,2)"):
        assert experiments.config_hash(shrunk_config([override])) == base, override
    for override in ("l2=0.5", "model.hidden=(4,)", "budget.epochs=2.0",
                     "train.divergence_loss=10.0", "data.split_seed=1"):
        assert experiments.config_hash(shrunk_config([override])) != base, override
    # A dict (the saved config.json) hashes like the ConfigDict it came from.
    assert experiments.config_hash(saved(shrunk_config())) == base

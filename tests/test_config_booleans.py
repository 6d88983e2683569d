"""Boolean and true/false/auto config fields: an override's text never reaches a truth test."""

import ml_collections
import pytest
import tensorflow as tf

from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments
from tf_sgd_regimes import member_map

ConfigError = experiments.ConfigError


def _fields_of_every_experiment():
    """(experiment, field, value) of every bool and tri-state field in the registry."""
    found = {}

    def walk(config, prefix, experiment):
        for key, value in config.items():
            name = prefix + key
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, name + ".", experiment)
            elif isinstance(value, bool) or name in experiments.TRI_STATE_FIELDS:
                found.setdefault(name, experiment)

    for experiment in experiments.names():
        walk(experiments.get_config(experiment), "", experiment)
    return sorted((experiment, field) for field, experiment in found.items())


FIELDS = _fields_of_every_experiment()


def test_the_registry_has_the_fields_this_file_is_about():
    names = {field for _, field in FIELDS}
    assert "train.jit_compile" in names and "data.augment" in names


@pytest.mark.parametrize("experiment, field", FIELDS)
@pytest.mark.parametrize("text, expected", [
    ("False", False), ("false", False), ("FALSE", False), (" 0 ", False), ("no", False),
    ("True", True), ("true", True), ("TRUE", True), ("1", True), ("Yes", True),
])
def test_boolean_override_is_a_bool(experiment, field, text, expected):
    config = experiments.apply_overrides(experiments.get_config(experiment),
                                         [f"--config.{field}={text}"])
    value = config
    for part in field.split("."):
        value = value[part]
    assert value is expected  # a bool, not the string "False" (truthy)


@pytest.mark.parametrize("experiment, field", FIELDS)
def test_boolean_override_refuses_other_words_naming_the_field(experiment, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        experiments.apply_overrides(experiments.get_config(experiment),
                                    [f"--config.{field}=maybe"])


@pytest.mark.parametrize("field", experiments.TRI_STATE_FIELDS)
@pytest.mark.parametrize("text", ["auto", "AUTO", "Auto"])
def test_tri_state_field_takes_auto(field, text):
    config = experiments.apply_overrides(experiments.get_config("digits_mlp_epoch_budget"),
                                         [f"--config.{field}={text}"])
    assert experiments.tri_state(config.train.jit_compile, field) == "auto"


@pytest.mark.parametrize("text, expected", [("False", False), ("TRUE", True)])
def test_engine_follows_the_jit_compile_override(text, expected):
    config = experiments.apply_overrides(experiments.get_config("digits_mlp_epoch_budget"),
                                         [f"train.jit_compile={text}"])
    assert engine_lib.use_xla(config, tf.distribute.get_strategy()) is expected


def test_a_string_set_in_a_config_function_is_parsed_too():
    config = experiments.get_config("digits_mlp_epoch_budget")
    config.train.jit_compile = "False"  # written by hand in a config file
    assert engine_lib.use_xla(config, tf.distribute.get_strategy()) is False
    config.train.jit_compile = "sometimes"
    with pytest.raises(ConfigError, match=r"train\.jit_compile"):
        experiments.validate(config)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("model, batch_size, expected", [
    ("mlp", 1, True), ("mlp", 4, True), ("mlp", 16, False), ("mlp", None, False),
    ("small_autoencoder", 4, True), ("small_autoencoder", 16, False),
    # Packed convnets: grouped convolutions with oneDNN, XLA's batched matmuls without.
    ("small_cnn", 1, "no oneDNN"), ("small_cnn", 256, "no oneDNN"),
    ("small_cnn", 512, False), ("small_wrn", 128, "no oneDNN"), ("small_wrn", 512, False),
    ("small_cnn", None, False),
    ("wide_resnet", 32, False), ("small_lstm_lm", 1, False),
])
def test_auto_follows_the_measured_table(model, batch_size, expected, onednn, monkeypatch):
    monkeypatch.setattr(member_map, "onednn_enabled", lambda: onednn)
    if expected == "no oneDNN":
        expected = not onednn
    config = experiments.get_config("digits_mlp_epoch_budget")
    config.model.name = model
    assert engine_lib.use_xla(config, tf.distribute.get_strategy(), batch_size) is expected
    config.train.jit_compile = "false"  # an explicit choice is obeyed at every batch size
    assert engine_lib.use_xla(config, tf.distribute.get_strategy(), batch_size) is False

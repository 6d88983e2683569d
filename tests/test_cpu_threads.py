"""config.train.intra_op_threads: validated, applied before TensorFlow's runtime starts, and
a clear message (not an error) when a sweep starts too late to change it."""

import json
import textwrap

import pytest

from conftest import run_python
from tf_sgd_regimes import cpu_threads
from tf_sgd_regimes import experiments


@pytest.mark.parametrize("value", [-1, True])
def test_bad_values_name_the_field(value):
    config = experiments.get_config("digits_mlp_epoch_budget")
    config.train.intra_op_threads = value
    with pytest.raises(experiments.ConfigError, match="config.train.intra_op_threads"):
        experiments.validate(config)


@pytest.mark.parametrize("text", ["two", "1.5"])
def test_bad_overrides_name_the_field(text):
    config = experiments.get_config("digits_mlp_epoch_budget")
    with pytest.raises(experiments.ConfigError, match="train.intra_op_threads"):
        experiments.validate(experiments.apply_overrides(
            config, [f"train.intra_op_threads={text}"]))


def test_default_leaves_tensorflow_alone():
    config = experiments.get_config("digits_mlp_epoch_budget")
    config.train.intra_op_threads = 0
    assert cpu_threads.apply(config)


def test_applied_before_start_up_and_reported_after():
    # A fresh interpreter: the pool can only be set before TensorFlow's runtime starts.
    done = run_python(textwrap.dedent("""
        import io, json
        from tf_sgd_regimes import experiments
        from tf_sgd_regimes.sweep import launch
        import tensorflow as tf
        default = tf.config.threading.get_intra_op_parallelism_threads()
        config = experiments.apply_overrides(
            experiments.get_config("digits_mlp_epoch_budget"), ["train.intra_op_threads=1"])
        launch.prepare(config)  # loads the data set too: the runtime starts here at latest
        tf.constant(1.0) + 1.0
        first = tf.config.threading.get_intra_op_parallelism_threads()
        late = experiments.apply_overrides(config, ["train.intra_op_threads=2"])
        out = io.StringIO()
        from tf_sgd_regimes import cpu_threads
        applied = cpu_threads.apply(late, out)
        print(json.dumps(dict(default=default, first=first, applied=applied,
                              after=tf.config.threading.get_intra_op_parallelism_threads(),
                              message=out.getvalue())))
    """))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["default"] == 0  # TensorFlow's own default before anything set it
    assert got["first"] == 1
    assert got["applied"] is False and got["after"] == 1
    assert "config.train.intra_op_threads=2 not applied" in got["message"]
    assert "fresh process" in got["message"]

"""Shared fixtures: a tiny in-memory data set, the real default config shrunk, helpers."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "digits_mlp_epoch_budget"


def tiny_dataset(num_train=40, num_test=17, num_features=5, num_classes=3, seed=0):
    """A small separable-ish classification problem built directly as a data.base.Dataset."""
    from tf_sgd_regimes.data import base

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, num_features)).astype(np.float32)

    def draw(count):
        labels = rng.integers(0, num_classes, size=count).astype(np.int32)
        features = centres[labels] + 0.8 * rng.normal(size=(count, num_features))
        return features.astype(np.float32), labels

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    return base.Dataset(name="tiny", task="classification", train_x=train_x, train_y=train_y,
                        test_x=test_x, test_y=test_y, num_outputs=num_classes,
                        input_shape=(num_features,))


def shrunk_config(overrides=(), lock=True):
    """The real default experiment's config, shrunk to a few seconds of training.

    2 optimizers x 2 batch sizes x 3 learning rates x 2 seeds = 24 cells, 1 epoch each,
    one hidden layer of 16 units. `overrides` ("a.b=value" strings) are applied after
    the shrinking ones, then the config is locked (as the CLI does) unless lock=False.
    """
    from tf_sgd_regimes import experiments

    config = experiments.get_config(DEFAULT_EXPERIMENT)
    shrink = ["model.hidden=(16,)", "budget.epochs=1.0", "sweep.batch_sizes=(64,128)",
              "sweep.effective_lrs=(0.0625,0.25,1.0)", "sweep.seeds=(0,1)",
              "analysis.best_k=1", "analysis.num_seeds=2", "train.steps_per_call=16",
              # The demo measures the gradient noise scale; its tests switch it on themselves.
              "train.noise_scale.enabled=False"]
    config = experiments.apply_overrides(config, shrink + list(overrides))
    if not lock:
        config.unlock()
    return config


def engine_config(hidden=(8,), l2=1e-3, steps_per_call=7, divergence_loss=1e3,
                  eval_batch_size=16):
    """A config for Engine on tiny_dataset(): the default experiment with a tiny MLP."""
    config = shrunk_config(lock=False)
    config.model.hidden = tuple(hidden)
    config.l2 = float(l2)
    config.train.steps_per_call = int(steps_per_call)
    config.train.divergence_loss = float(divergence_loss)
    config.train.eval_batch_size = int(eval_batch_size)
    # One runner per pack: these tests reach into it (pack_weights, trace counts); packs
    # in shards have their own tests (test_shards.py), and sweeps of the demo use them.
    config.train.member_shards = 1
    config.lock()
    return config


def pack_weights(engine, num_members, batch_size):
    """Each member's final trainable weights (list of arrays per member) after train_pack.

    The engine keeps the stacked weights in its cached pack runner; this is the one place
    the tests reach into it.
    """
    runner = engine._pack_runner(num_members, batch_size)  # a _PackRunner or shards.Shards
    return [runner.member_weights(k) for k in range(num_members)]


def run_python(code, timeout=300, env_extra=None):
    """Runs `code` in a fresh interpreter (for settings that must precede TF start-up)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(env_extra or {})  # may override the log level
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def dataset():
    return tiny_dataset()

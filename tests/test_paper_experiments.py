"""Every paper experiment runs by name, shrunk, through the real loaders; the streamed
(ImageNet) sampler and the autoencoder path of the engine against independent references."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_sgd_regimes import data
from tf_sgd_regimes import engine
from tf_sgd_regimes import experiments
from tf_sgd_regimes import models
from tf_sgd_regimes import samplers
from tf_sgd_regimes.configs import common
from tf_sgd_regimes.sweep import loop as sweep

PTB_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ptb")
MOCK_EXAMPLES = 16

PAPER = [
    "wrn16_4_cifar10_epoch_budget", "wrn16_4_cifar10_lr_sweep",
    "wrn16_4_cifar10_skipinit_epoch_budget", "wrn16_4_cifar10_skipinit_step_budget",
    "wrn28_10_cifar100_step_budget", "wrn28_10_cifar100_skipinit_step_budget",
    "resnet50_imagenet_epoch_budget", "ptb_lstm_epoch_budget", "ptb_lstm_step_budget",
    "ptb_lstm_variable_epoch_budget", "mnist_autoencoder_epoch_budget",
    "mnist_autoencoder_step_budget", "mnist_autoencoder_variable_epoch_budget",
]
EMBEDDED = ["digits_cnn_epoch_budget", "digits_wrn_epoch_budget",
            "digits_autoencoder_epoch_budget", "synthetic_lstm_epoch_budget"]

# Tiny stand-ins for each model's size fields (the family and its other choices stay).
TINY_MODEL = {
    "wide_resnet": dict(depth=10, width=1),
    "resnet50": dict(stage_blocks=(1, 1, 1, 1), base_width=4, ghost_batch_size=2),
    "lstm_lm": dict(embedding_size=6, units=6),
    "autoencoder": dict(widths=(8, 2)),
    "small_cnn": dict(filters=(2, 4)),
    "small_wrn": dict(ghost_batch_size=2),
    "small_autoencoder": dict(widths=(4, 2)),
    "small_lstm_lm": dict(embedding_size=4, units=4),
}


def test_every_paper_experiment_is_registered_with_its_facts():
    assert set(PAPER + EMBEDDED) <= set(experiments.names())
    facts = {  # name: (budget kind, epochs or steps, batch sizes, seeds, best k, reference)
        "wrn16_4_cifar10_skipinit_step_budget": ("steps", 156_250, (16, 2048), 15, 12, "table3"),
        "wrn28_10_cifar100_step_budget": ("steps", 9_765, (256, 16384), 15, 12, "table4"),
        "wrn28_10_cifar100_skipinit_step_budget": ("steps", 156_250, (32, 2048), 15, 12,
                                                   "table5"),
        "resnet50_imagenet_epoch_budget": ("epochs", 90, (256, 4096), 1, 1, "table2"),
        "ptb_lstm_step_budget": ("steps", 16_560, (16, 256), 7, 5, "table6"),
        "mnist_autoencoder_step_budget": ("steps", 156_250, (64, 4096), 7, 5, "table7"),
        "wrn16_4_cifar10_epoch_budget": ("epochs", 200, None, 15, 12, ""),
        "ptb_lstm_epoch_budget": ("epochs", 40, None, 7, 5, ""),
        "mnist_autoencoder_epoch_budget": ("epochs", 200, None, 7, 5, ""),
    }
    for name, (kind, amount, edges, seeds, best_k, table) in facts.items():
        config = experiments.get_config(name)
        experiments.validate(config)
        assert config.budget.kind == kind
        assert (config.budget.steps if kind == "steps" else config.budget.epochs) == amount
        if edges:
            assert (min(config.sweep.batch_sizes), max(config.sweep.batch_sizes)) == edges
        assert len(config.sweep.seeds) == seeds and config.analysis.best_k == best_k
        assert config.analysis.paper_reference == table
    lstm = experiments.get_config("ptb_lstm_step_budget")
    assert lstm.train.clip_grad_norm == 5.0 and lstm.analysis.selection_mode == "min"
    ratios = np.diff(np.log2(lstm.sweep.effective_lrs))
    np.testing.assert_allclose(ratios, 0.5)  # the sqrt(2) grid
    # Table 6's printed optima (1.4, 2.0, 2.8, 5.6) are points of the grid.
    for printed in (1.4, 2.0, 2.8, 5.6):
        assert min(abs(lr / printed - 1) for lr in lstm.sweep.effective_lrs) < 0.03
    table5 = experiments.get_config("wrn28_10_cifar100_skipinit_step_budget")
    for printed in (0.025, 0.05, 0.1, 0.2):
        assert min(abs(lr - printed) for lr in table5.sweep.effective_lrs) < 1e-9
    assert experiments.get_config("wrn16_4_cifar10_lr_sweep").sweep.batch_sizes == (64, 1024)
    assert experiments.get_config("ptb_lstm_variable_epoch_budget").sweep.batch_sizes == (64,)
    assert experiments.get_config(
        "mnist_autoencoder_variable_epoch_budget").sweep.batch_sizes == (32,)


def shrink(config, data_dir):
    """The experiment at toy size: tiny model, 2 cells of a few steps, 1 seed."""
    model_name = config.model.name
    for field, value in TINY_MODEL.get(model_name, {}).items():
        config.model[field] = value
    if config.data.name == "ptb":
        config.data.data_dir = PTB_FIXTURE
        config.data.unroll = 2
        config.train.eval_batch_size = 1  # the 4-token test fixture holds one stream
        batch = 2
    elif config.data.name == "synthetic_language":
        config.data.num_train_tokens = 400
        config.data.num_test_tokens = 100
        config.data.unroll = 5
        config.train.eval_batch_size = 4
        batch = 4
    else:
        if "data_dir" in config.data:
            config.data.data_dir = data_dir
        if config.data.name == "imagenet":
            config.data.image_size = 32
        config.train.eval_batch_size = 8
        batch = 4
    config.sweep.batch_sizes = (batch,)
    config.sweep.optimizers = config.sweep.optimizers[-1:]
    config.sweep.effective_lrs = tuple(sorted(config.sweep.effective_lrs)[:2])
    config.sweep.seeds = (0,)
    if config.sweep.epoch_budgets:
        config.sweep.epoch_budgets = (1.0,)
    # A few steps: 16 mock examples / 4 = 4 per epoch; 1,437 digits / 4 = 359 per epoch.
    config.budget.epochs = 0.01 if config.data.name.startswith("digits") else 1.0
    config.budget.steps = 3
    config.train.steps_per_call = 2
    config.analysis.best_k = 1
    config.analysis.num_seeds = 1
    return config


@pytest.mark.parametrize("name", PAPER + EMBEDDED)
def test_experiment_runs_end_to_end_shrunk(name, tmp_path):
    config = shrink(experiments.get_config(name), str(tmp_path / "tfds"))
    config = experiments.apply_overrides(config, [])
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        records = sweep.Sweep(config, str(tmp_path / "run"), stream=open(os.devnull, "w")).run()
    assert len(records) == 2
    metric = config.analysis.selection_metric
    for record in records:
        assert record["status"] == "complete", record.get("error")
        assert record["experiment"] == name
        assert math.isfinite(record["metrics"][metric])
        assert record["hparams"]["batch_size"] == config.sweep.batch_sizes[0]
        assert record["steps_done"] == record["hparams"]["steps"]


# -- the streamed (ImageNet) sampler ----------------------------------------------------

def _imagenet(tmp_path):
    return data.get_dataset("imagenet", data_dir=str(tmp_path), image_size=16)


def _streamed_config():
    config = common.base_config()
    config.data = dict(name="imagenet")
    # Whole-batch BN statistics: ghost batches are tested elsewhere and slow the trace.
    config.model = dict(name="resnet50", **dict(TINY_MODEL["resnet50"], ghost_batch_size=None))
    config.train.eval_batch_size = 6
    config.train.steps_per_call = 2
    return config


def test_streamed_sampler_gives_each_member_its_own_stream(tmp_path):
    strategy = tf.distribute.get_strategy()
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        dataset = _imagenet(tmp_path)
        sampler = samplers.StreamedSampler(dataset, strategy, _streamed_config())
        traces = []

        @tf.function
        def two_steps(batch_size):
            traces.append(1)
            out = []
            for i in range(2):
                fetched = sampler.fetch()
                out.append(strategy.run(sampler.train_batch, args=(
                    None, i, batch_size, 0, 1, tf.constant(0, tf.int64), None, fetched)))
            return out

        def reference(seed, batch_size):
            return [batch for batch in dataset.train_dataset(batch_size, seed).take(2)]

        for seeds, batch_size in (((3, 4), 4), ((5, 6), 4), ((5, 6), 2)):
            sampler.host_indices(seeds, 0, 2, batch_size, 2)
            steps = two_steps(tf.constant(batch_size))
            for k, seed in enumerate(seeds):
                for (x, y), (want_x, want_y) in zip(steps, reference(seed, batch_size)):
                    assert x.shape[:2] == (len(seeds), batch_size)
                    np.testing.assert_allclose(x[k].numpy(), want_x.numpy(), atol=1e-5)
                    np.testing.assert_array_equal(y[k].numpy(), want_y.numpy())
            assert not np.allclose(steps[0][0][0].numpy(), steps[0][0][1].numpy())
        # New packs and batch sizes reuse the compiled loop: the streams are read by reference.
        assert len(traces) == 1
        # Evaluation covers the split exactly once (padding has weight 0).
        engine_stub = type("E", (), {"eval_batch_size": 5})()
        batches = list(sampler.eval_batches("test", engine_stub))
        assert all(b[0].shape == (5, 16, 16, 3) and b[3] is False for b in batches)
        assert sum(float(b[2].sum()) for b in batches) == dataset.num_test
        train_batches = list(sampler.eval_batches("train", engine_stub))
        assert sum(float(b[2].sum()) for b in train_batches) == dataset.num_test


def test_engine_trains_a_streamed_pack(tmp_path):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        dataset = _imagenet(tmp_path)
        trainer = engine.Engine(_streamed_config(), dataset, tf.distribute.get_strategy())
        assert isinstance(trainer.sampler, samplers.StreamedSampler)
        members = [engine.Member("a", 0.1, 0.9, 0), engine.Member("b", 0.1, 0.9, 1)]
        first = trainer.train_pack(members, 4, 3)
        again = trainer.train_pack(members, 4, 3)
    for results in (first, again):
        for result in results:
            assert result.status == "complete" and result.steps_done == 3
            assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
            assert math.isfinite(result.metrics["train_loss"])
    # A pack restarts its members' streams: the same pack twice gives the same result.
    for a, b in zip(first, again):
        assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], rel=1e-5)
    # Different seeds: different initialisation and data, different results.
    assert first[0].metrics["test_loss"] != pytest.approx(first[1].metrics["test_loss"])


# -- the autoencoder path -----------------------------------------------------------------

def test_autoencoder_uses_inputs_as_targets_and_reports_summed_mse():
    dataset = data.get_dataset("digits_autoencoder")
    assert dataset.train_y is None
    config = common.base_config()
    config.data = dict(name="digits_autoencoder")
    config.model = dict(name="small_autoencoder", widths=(16, 4))
    config.l2 = 1e-3
    config.l2_scope = "kernels"
    config.train.eval_batch_size = 200
    config.train.steps_per_call = 2
    member = engine.Member("m", 0.5, 0.9, seed=4)
    batch, steps = dataset.num_train, 5  # full batch: the data order cannot matter
    trainer = engine.Engine(config, dataset, tf.distribute.get_strategy())
    (result,) = trainer.train_pack([member], batch, steps)

    # Independent loop: full-batch gradient of mean summed squared error + 0.5 l2 |kernels|^2.
    model = models.get_model("small_autoencoder", dataset.input_shape, 64, seed=4,
                             widths=(16, 4))
    weights = model.trainable_variables
    kernels = [w for w in weights if len(w.shape) == 2]
    accumulators = [np.zeros(w.shape, np.float32) for w in weights]
    x = tf.constant(dataset.train_x)
    for step in range(steps):
        with tf.GradientTape() as tape:
            error = tf.reduce_sum(tf.square(model(x, training=True) - x), axis=1)
            loss = tf.reduce_mean(error) + 0.5 * config.l2 * tf.add_n(
                [tf.reduce_sum(tf.square(k)) for k in kernels])
        grads = tape.gradient(loss, weights)
        rate = member.learning_rate * 0.5 ** min(max(math.floor(20 * step / steps) - 9, 0), 10)
        for w, a, g in zip(weights, accumulators, grads):
            a *= member.momentum
            a += g.numpy()
            w.assign(w.numpy() - rate * a)

    def summed_mse(inputs):
        outputs = model.predict(inputs, verbose=0)
        return float(np.mean(np.sum((outputs - inputs) ** 2, axis=1)))

    assert result.metrics["test_mse"] == pytest.approx(summed_mse(dataset.test_x), rel=1e-4)
    assert result.metrics["train_mse"] == pytest.approx(summed_mse(dataset.train_x), rel=1e-4)
    penalty = 0.5 * config.l2 * sum(float(np.sum(k.numpy() ** 2)) for k in kernels)
    assert result.metrics["train_loss"] == pytest.approx(
        summed_mse(dataset.train_x) + penalty, rel=1e-4)
    assert result.metrics["test_mse"] > 1.0  # a sum over 64 pixels, not a per-pixel mean

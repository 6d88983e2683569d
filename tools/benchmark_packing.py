"""Packed engine vs one cell at a time with keras-tuner + model.fit, on the same demo cells.

    python tools/benchmark_packing.py                     # B = 4 and 64, 2 epochs
    python tools/benchmark_packing.py --batch_sizes=4,64 --epochs=2 --seeds=3

Both ways train the embedded default's cells (digits MLP, every effective learning rate of
its grid, SGD and Momentum, `--seeds` seeds) for the same budget and report wall time end
to end (model building, training, final evaluation, records). They run side by side in one
process so machine noise hits both; the figure to quote is the ratio.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

from tf_sgd_regimes import experiments  # noqa: E402
from tf_sgd_regimes import models  # noqa: E402
from tf_sgd_regimes import optimizers  # noqa: E402
from tf_sgd_regimes.sweep import loop as sweep_lib  # noqa: E402


def shrunk_config(batch_sizes, epochs, seeds):
    config = experiments.get_config("digits_mlp_epoch_budget")
    config.sweep.batch_sizes = tuple(batch_sizes)
    config.budget.epochs = float(epochs)
    config.sweep.seeds = tuple(range(seeds))
    config.analysis.best_k = min(config.analysis.best_k, seeds)
    config.train.checkpoint_every_s = 0.0  # same as the baseline: no mid-run checkpoints
    return config


class OneCellHyperModel(kt.HyperModel):
    """What a user writes: build the model from hyperparameters, fit it, evaluate it."""

    def __init__(self, config, dataset):
        super().__init__()
        self.config = config
        self.dataset = dataset

    def build(self, hp):
        seed = hp.get("seed")
        keras.utils.set_random_seed(seed)
        model = models.get_model("mlp", self.dataset.input_shape, self.dataset.num_outputs,
                                 seed=seed, hidden=tuple(self.config.model.hidden))
        return model

    def fit(self, hp, model, *args, **kwargs):
        dataset, config = self.dataset, self.config
        batch_size = hp.get("batch_size")
        steps = int(round(config.budget.epochs * dataset.num_train / batch_size))
        optimizer = optimizers.make_optimizer(hp.get("optimizer"), hp.get("effective_lr"),
                                              total_steps=steps,
                                              momentum=(config.sweep.momentum
                                                        if hp.get("optimizer") == "momentum"
                                                        else None))
        model.compile(optimizer=optimizer, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(dataset.train_x, dataset.train_y, batch_size=batch_size,
                  epochs=int(np.ceil(config.budget.epochs)), verbose=0, shuffle=True)
        loss, accuracy = model.evaluate(dataset.test_x, dataset.test_y, verbose=0,
                                        batch_size=1024)
        if not np.isfinite(loss):
            return {"score": -1e30}
        return {"score": float(accuracy)}


def run_packed(config, workdir):
    start = time.perf_counter()
    records = sweep_lib.Sweep(config, workdir, stream=open(os.devnull, "w")).run()
    return time.perf_counter() - start, len(records)


def run_one_at_a_time(config, workdir):
    dataset = sweep_lib.load_dataset(config)
    hp = kt.HyperParameters()
    hp.Choice("batch_size", list(config.sweep.batch_sizes))
    hp.Choice("optimizer", list(config.sweep.optimizers))
    hp.Choice("effective_lr", list(config.sweep.effective_lrs))
    hp.Choice("seed", list(config.sweep.seeds))
    tuner = kt.GridSearch(OneCellHyperModel(config, dataset), objective=kt.Objective(
        "score", "max"), hyperparameters=hp, directory=workdir, project_name="baseline",
        max_consecutive_failed_trials=10**6)
    start = time.perf_counter()
    tuner.search(verbose=0)
    return time.perf_counter() - start, len(tuner.oracle.trials)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", default="4,64")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    config = shrunk_config(batch_sizes, args.epochs, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        packed_s, packed_cells = run_packed(config, os.path.join(tmp, "packed"))
        single_s, single_cells = run_one_at_a_time(config, os.path.join(tmp, "single"))
    print(f"cells: packed {packed_cells}, one-at-a-time {single_cells} "
          f"(batch sizes {batch_sizes}, {args.epochs:g} epochs, {args.seeds} seeds)")
    print(f"packed engine:             {packed_s:8.1f} s")
    print(f"keras-tuner + model.fit:   {single_s:8.1f} s")
    print(f"speed-up (one-at-a-time / packed): {single_s / packed_s:.1f}x")


if __name__ == "__main__":
    main()

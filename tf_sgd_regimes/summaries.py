"""TensorBoard output: one run per cell with scalars and HParams."""

import os
from typing import Dict, Sequence

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

# Hyperparameters shown in the HParams dashboard, in this column order.
HPARAM_NAMES = ("optimizer", "batch_size", "effective_lr", "momentum", "seed", "epochs",
                "steps")


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, "tensorboard")


def metric_names(task: str, split: str) -> list:
    names = {"classification": [f"{split}_accuracy", f"{split}_loss", "train_loss",
                                "train_accuracy"],
             "language_model": [f"{split}_perplexity", f"{split}_loss", "train_perplexity",
                                "train_loss"],
             "autoencoder": [f"{split}_mse", "train_mse", "train_loss"]}[task]
    return [f"final/{n}" for n in names] + ["final/diverged", "final/diverged_step"]


def write_experiment(workdir: str, config, task: str, split: str) -> None:
    """Declares the HParams experiment (domains and metrics) once, at the log root."""
    sweep = config.sweep
    domains = [
        hparams_api.HParam("optimizer", hparams_api.Discrete(list(sweep.optimizers))),
        hparams_api.HParam("batch_size", hparams_api.Discrete([int(b) for b in
                                                              sweep.batch_sizes])),
        hparams_api.HParam("effective_lr", hparams_api.RealInterval(
            float(min(sweep.effective_lrs)), float(max(sweep.effective_lrs)))),
        hparams_api.HParam("momentum", hparams_api.RealInterval(0.0, 1.0)),
        hparams_api.HParam("seed", hparams_api.Discrete([int(s) for s in sweep.seeds])),
        hparams_api.HParam("epochs", hparams_api.RealInterval(0.0, 1e9)),
        hparams_api.HParam("steps", hparams_api.IntInterval(0, 2**62)),
    ]
    metrics = [hparams_api.Metric(name, display_name=name.split("/", 1)[1])
               for name in metric_names(task, split)]
    writer = tf.summary.create_file_writer(tensorboard_dir(workdir))
    with writer.as_default():
        hparams_api.hparams_config(hparams=domains, metrics=metrics)
    writer.close()


class PackWriters:
    """One summary writer per cell of a pack."""

    def __init__(self, workdir: str, cell_ids: Sequence[str]):
        root = tensorboard_dir(workdir)
        self.writers = [tf.summary.create_file_writer(os.path.join(root, cell_id))
                        for cell_id in cell_ids]

    def scalars(self, step: int, values: Dict[str, Sequence[float]]) -> None:
        """values: name -> one value per member; NaN values are skipped."""
        for k, writer in enumerate(self.writers):
            with writer.as_default(step=step):
                for name, per_member in values.items():
                    value = float(per_member[k])
                    if value == value:  # not NaN
                        tf.summary.scalar(name, value)

    def final(self, k: int, cell_id: str, hparams: dict, metrics: dict, diverged_step,
              step: int) -> None:
        with self.writers[k].as_default(step=step):
            hparams_api.hparams({name: hparams[name] for name in HPARAM_NAMES},
                                trial_id=cell_id)
            for name, value in metrics.items():
                if value is not None:
                    tf.summary.scalar(f"final/{name}", float(value))
            tf.summary.scalar("final/diverged", 1.0 if diverged_step is not None else 0.0)
            if diverged_step is not None:
                tf.summary.scalar("final/diverged_step", float(diverged_step))

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

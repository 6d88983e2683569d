"""A pack's periodic checkpoint (kill-safe), and the errors of stopping and restoring."""

import json
import os
import shutil
import time
from typing import Optional

import tensorflow as tf

from tf_sgd_regimes import atomic

MANIFEST = "manifest.json"  # in each pack's checkpoint directory (read by sweep/resume.py)


class Preempted(RuntimeError):
    """Training stopped on request (SIGTERM) after saving a checkpoint."""


class PackCheckpoint:
    """Periodic checkpoints of one pack's state, written so a kill at any moment is safe.

    Each save writes a new tf.train.Checkpoint prefix, then atomically replaces a small
    JSON manifest naming it (and the pack it belongs to); older prefixes are deleted
    afterwards. A kill during a save leaves the previous manifest and checkpoint intact.
    """

    def __init__(self, directory: str, every_s: float, clock=time.monotonic):
        self.directory = directory
        self.every_s = float(every_s)
        self.clock = clock
        self._last = clock()
        self.restored_extra = {}  # `extra` of the last restored save (JSON values)

    def due(self) -> bool:
        return self.every_s > 0 and self.clock() - self._last >= self.every_s

    def _checkpoint(self, runner) -> tf.train.Checkpoint:
        # A pack trained in shards (shards.Shards) is saved as the whole pack's tensors
        # (its view), so a checkpoint does not depend on how many shards wrote it.
        view = runner.view()
        return tf.train.Checkpoint(weights=view.weights, accumulators=view.accumulators,
                                   states=view.states, step=view.step,
                                   diverged_at=view.diverged_at)

    def save(self, runner, identity: dict, step: int, extra: Optional[dict] = None) -> None:
        """Saves the pack's tensors; `extra` (JSON values, e.g. the noise probe's
        measurements) goes into the manifest and comes back as `restored_extra`."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"step-{step:012d}"
        prefix = self._checkpoint(runner).write(os.path.join(self.directory, name, "ckpt"))
        manifest = dict(identity, step=int(step), prefix=os.path.relpath(prefix, self.directory),
                        extra=extra or {})
        atomic.write_atomic(os.path.join(self.directory, MANIFEST),
                            json.dumps(manifest, sort_keys=True))
        for entry in os.listdir(self.directory):
            if entry.startswith("step-") and entry != name:
                shutil.rmtree(os.path.join(self.directory, entry), ignore_errors=True)
        self._last = self.clock()

    def restore(self, runner, identity: dict) -> int:
        """Restores a checkpoint of this very pack; returns the step to continue from."""
        self.restored_extra = {}
        path = os.path.join(self.directory, MANIFEST)
        if not os.path.exists(path):
            return 0
        try:
            with open(path) as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"checkpoint manifest {path} is unreadable ({e}); delete {self.directory} "
                "to retrain this pack from its start") from e
        if {k: manifest.get(k) for k in identity} != identity:
            self.clear()  # a checkpoint of another pack (the grid changed): not ours
            return 0
        prefix = os.path.join(self.directory, manifest["prefix"])
        try:
            self._checkpoint(runner).read(prefix).assert_existing_objects_matched()
            runner.load_view()
        except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
            # A truncated data file surfaces as IndexError ("Read less bytes than requested").
            raise CheckpointError(
                f"checkpoint {prefix} is corrupt or incomplete ({e}); delete {self.directory} "
                "to retrain this pack from its start") from e
        self._last = self.clock()
        self.restored_extra = manifest.get("extra") or {}
        return int(manifest["step"])

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be restored; the message names it."""

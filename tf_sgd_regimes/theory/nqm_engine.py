"""The noisy quadratic model behind the sweep's data-set and engine interfaces.

`sweep.Sweep` builds NQMData and NQMEngine when `config.engine == "nqm"`, so NQM
experiments go through the same oracle -> pack -> ledger -> TensorBoard -> report path as
every Keras experiment; a pack costs milliseconds (nqm.train_cells, exact dynamics).
"""

from typing import Callable, List, Optional, Sequence

import numpy as np

from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes.theory import nqm

TASK = "quadratic"  # summaries.metric_names knows its metrics: test_loss, train_loss, expected_loss
# Loss-curve points passed to on_chunk: TensorBoard scalars cost ~1 ms each, far more
# than the dynamics, so a few points per cell keep a sweep at seconds.
CURVE_REPORTS = 3


def nqm_config(config) -> dict:
    """The plain nqm.default_config()-style dict of an experiment config (config.nqm)."""
    if "nqm" not in config:
        raise ValueError("config.engine is 'nqm' but the config has no config.nqm block; "
                         "build it with tf_sgd_regimes.configs.nqm.get_config()")
    fields = dict(config.nqm)
    fields["decay_factor"] = float(config.schedule.decay_factor)  # one schedule for all engines
    if int(config.schedule.warmup_steps):
        raise ValueError("config.schedule.warmup_steps: the NQM engine has no warmup; set it to 0")
    return fields


class NQMData:
    """What the sweep needs of a data set, for the NQM: a nominal size N and the task."""

    task = TASK
    split = "test"
    ordering = "shuffle"

    def __init__(self, config):
        self.num_train = int(nqm_config(config)["train_size"])

    def steps_per_epoch(self, batch_size: int) -> float:
        return self.num_train / float(batch_size)


class NQMEngine:
    """Trains packs of NQM cells with the exact expected-loss dynamics."""

    def __init__(self, config):
        self.config = config
        self.nqm = nqm_config(config)

    @staticmethod
    def cell_work(steps: int, batch_size: int) -> float:
        """The progress line's cost model: closed-form dynamics cost about the same per
        cell whatever its steps and batch size (a few matrix powers), unlike SGD steps."""
        del steps, batch_size
        return 1.0

    def train_pack(
        self,
        members: Sequence[engine_lib.Member],
        batch_size: int,
        total_steps: int,
        on_chunk: Optional[Callable[[engine_lib.ChunkReport], None]] = None,
        checkpoint=None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> List[engine_lib.MemberResult]:
        """Same contract as engine.Engine.train_pack; `checkpoint` is ignored (nothing to save).

        on_chunk is called at CURVE_REPORTS evenly spaced points of the loss curve with the
        exact expected loss, so TensorBoard shows coarse curves.
        """
        if should_stop is not None and should_stop():
            raise pack_checkpoint.Preempted("stopped before the NQM pack started")
        cells = [{"optimizer": "momentum" if m.momentum > 0 else "sgd",
                  "momentum": float(m.momentum), "batch_size": int(batch_size),
                  "effective_lr": float(m.effective_lr), "seed": int(m.seed),
                  "steps": int(total_steps)} for m in members]
        results = nqm.train_cells(self.nqm, cells)
        if on_chunk is not None:
            self._report_curves(members, results, total_steps, on_chunk)
        return [engine_lib.MemberResult(
            cell_id=m.cell_id, status="diverged" if r["diverged_step"] is not None else "complete",
            metrics=r["metrics"], diverged_step=r["diverged_step"], steps_done=r["steps_done"])
            for m, r in zip(members, results)]

    def _report_curves(self, members, results, total_steps, on_chunk) -> None:
        steps = results[0]["loss_curve"]["steps"]  # every cell of a pack shares the budget
        curves = np.array([[np.nan if v is None else v for v in r["loss_curve"]["expected_loss"]]
                           for r in results], dtype=float)
        diverged = np.array([-1 if r["diverged_step"] is None else r["diverged_step"]
                             for r in results])
        factors = nqm.schedule_factors(total_steps, self.nqm["decay_factor"],
                                       self.nqm["schedule"])
        base = np.array([m.effective_lr for m in members])
        chosen = np.unique(np.linspace(0, len(steps) - 1, min(CURVE_REPORTS, len(steps)))
                           .round().astype(int))
        for j in chosen:
            step = int(steps[j])
            dead = (diverged >= 0) & (diverged <= step)
            loss = np.where(dead, np.nan, curves[:, j])
            on_chunk(engine_lib.ChunkReport(step, total_steps, loss, base * factors[step - 1],
                                            np.where(dead, diverged, -1)))

"""The paper's step-based learning-rate schedule (appendix B.1), with optional warmup.

One definition serves every consumer: `_factor` is written once against a tiny array
namespace, and `schedule_factor` (TensorFlow: the training step, PaperSchedule) and
`schedule_factor_np` (numpy: the noisy quadratic model, progress lines, figures) are that
same code on tf and on numpy. `Schedule.from_config(config)` reads config.schedule once,
so no caller reads the raw fields around it.
"""

import dataclasses
import types

import keras
import numpy as np
import tensorflow as tf

# Appendix B.1: constant for the first half of the budget, then divide by gamma every
# 1/20 of the budget. In units of budget/20 the first decay is at 10 and the last at 19.
_INTERVALS = 20
_FIRST_DECAY = 10
_NUM_DECAYS = _INTERVALS - _FIRST_DECAY


def _as_whole_steps(value) -> tf.Tensor:
    """A python number or int/float tensor (or variable) as an int64 step count.

    Float values are floored: a step is a whole number of updates. Integer arithmetic
    keeps the decay boundaries exact whatever the budget (float32 would misplace them
    for budgets above a few hundred thousand steps).
    """
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_integer:
        tensor = tf.floor(tensor)
    return tf.cast(tensor, tf.int64)


def _check_python_args(total_steps, decay_factor, warmup_steps) -> None:
    """Validate the arguments that are plain python numbers (tensors are trusted)."""

    def is_number(value):
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        )

    if is_number(total_steps) and total_steps <= 0:
        raise ValueError(f"total_steps must be > 0; got total_steps={total_steps!r}")
    if is_number(decay_factor) and decay_factor < 1:
        raise ValueError(
            f"decay_factor must be >= 1 (the rate is divided by it); got "
            f"decay_factor={decay_factor!r}"
        )
    if is_number(warmup_steps) and warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0; got warmup_steps={warmup_steps!r}")


# The two array namespaces the definition below runs on.
_TF = types.SimpleNamespace(
    whole=lambda v: _as_whole_steps(v), floordiv=tf.math.floordiv,
    clip=tf.clip_by_value, to_float=lambda v: tf.cast(v, tf.float32),
    power=lambda base, exponent: tf.pow(tf.cast(base, tf.float32), exponent),
    minimum=tf.minimum, maximum=tf.maximum,
    where=lambda c, a, b: tf.where(c, a, tf.ones_like(a) * b))
_NP = types.SimpleNamespace(
    whole=lambda v: np.floor(np.asarray(v, np.float64)).astype(np.int64)
    if not np.issubdtype(np.asarray(v).dtype, np.integer) else np.asarray(v, np.int64),
    floordiv=np.floor_divide, clip=np.clip, to_float=lambda v: np.asarray(v, np.float64),
    power=lambda base, exponent: np.power(np.float64(base), exponent),
    minimum=np.minimum, maximum=np.maximum, where=np.where)


def _num_decays(xp, step, total_steps):
    decays = xp.floordiv(_INTERVALS * xp.whole(step), xp.whole(total_steps)) - (_FIRST_DECAY - 1)
    return xp.clip(decays, 0, _NUM_DECAYS)


def _factor(xp, step, total_steps, decay_factor, warmup_steps):
    """warmup(s) / gamma ** decays(s): THE schedule (see schedule_factor for its contract)."""
    decay = xp.power(decay_factor, -xp.to_float(_num_decays(xp, step, total_steps)))
    step = xp.to_float(xp.whole(step))
    warmup_steps = xp.to_float(xp.whole(warmup_steps))
    # max(.., 1) only guards the division; with warmup off `where` picks 1 anyway.
    ramp = xp.minimum(1.0, (step + 1.0) / xp.maximum(warmup_steps, 1.0))
    warmup = xp.where(warmup_steps > 0, ramp, 1.0)
    return warmup * decay


def num_decays(step, total_steps) -> tf.Tensor:
    """How many times the rate has been divided by gamma at `step` (int64, 0..10).

    With T = total_steps, the k-th decay (k = 1..10) happens at the first step s with
    s >= T/2 + (k-1)·T/20, i.e. 20·s >= (9 + k)·T, so

        decays(s) = clip(floor(20·s / T) - 9, 0, 10).

    The boundaries are real-valued (T need not be divisible by 20). Steps at or beyond
    the budget keep the last value, T/2^10 for gamma = 2; for T >= 20 the last step of
    the budget (s = T - 1) is already at 10 decays, for smaller T it may have fewer.
    """
    return _num_decays(_TF, step, total_steps)


def schedule_factor(step, total_steps, decay_factor=2.0, warmup_steps=0) -> tf.Tensor:
    """The multiplier of the base learning rate at `step` (0-based), as float32.

    factor = warmup(s) / decay_factor ** decays(s), with decays(s) as in `num_decays`
    and warmup(s) = min(1, (s + 1) / warmup_steps) when warmup_steps > 0, else 1: the
    first update already uses lr/warmup_steps and update `warmup_steps - 1` uses the
    full rate. Warmup multiplies the decay, so it never undoes a decay.

    Pure TF ops without python control flow on values: every argument may be a python
    number or a tensor/variable (int or float; step counts are floored), and arguments
    broadcast against each other, so one call can evaluate many steps or members.

    Args:
      step: the update index, 0 for the first update.
      total_steps: the budget in steps (> 0).
      decay_factor: gamma (>= 1); the rate is divided by it at each decay.
      warmup_steps: length of the linear warmup in steps; 0 turns it off.

    Returns:
      A float32 tensor broadcast from the shapes of the arguments.
    """
    _check_python_args(total_steps, decay_factor, warmup_steps)
    return _factor(_TF, step, total_steps, decay_factor, warmup_steps)


def schedule_factor_np(step, total_steps, decay_factor=2.0, warmup_steps=0) -> np.ndarray:
    """schedule_factor in numpy (float64), from the same definition: for code that must
    not build TF ops (the noisy quadratic model, host-side progress lines)."""
    _check_python_args(total_steps, decay_factor, warmup_steps)
    return _factor(_NP, step, total_steps, decay_factor, warmup_steps)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The schedule of an experiment: gamma, warmup, and whether it decays at all.

    constant=True is the noisy quadratic model's "constant" option (no decay, no warmup).
    """

    decay_factor: float = 2.0
    warmup_steps: int = 0
    constant: bool = False

    def __post_init__(self):
        _check_python_args(1, self.decay_factor, self.warmup_steps)

    @classmethod
    def from_config(cls, config) -> "Schedule":
        """From config.schedule (a ConfigDict, or the plain dict of config.json)."""
        fields = config["schedule"]
        return cls(decay_factor=float(fields["decay_factor"]),
                   warmup_steps=int(fields["warmup_steps"]))

    def factor(self, step, total_steps) -> tf.Tensor:
        """The multiplier at `step` as a float32 TF tensor (the training step)."""
        if self.constant:
            return tf.ones_like(tf.cast(step, tf.float32))
        return schedule_factor(step, total_steps, self.decay_factor, self.warmup_steps)

    def factor_np(self, step, total_steps) -> np.ndarray:
        """The multiplier at `step` in numpy float64 (same definition as `factor`)."""
        if self.constant:
            return np.ones(np.shape(step))
        return schedule_factor_np(step, total_steps, self.decay_factor, self.warmup_steps)


@keras.saving.register_keras_serializable(package="tf_sgd_regimes")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """initial_learning_rate · schedule_factor(step, ...): the paper's schedule in steps."""

    def __init__(
        self,
        initial_learning_rate: float,
        total_steps: int,
        decay_factor: float = 2.0,
        warmup_steps: int = 0,
        name: str = "paper_schedule",
    ):
        """Validates and stores the arguments.

        Args:
          initial_learning_rate: the raw rate (ε, not ε_eff) before any decay; > 0.
          total_steps: the budget in steps; > 0.
          decay_factor: gamma, >= 1 (1 gives a constant rate).
          warmup_steps: linear warmup length, 0 <= warmup_steps < total_steps.
          name: name scope of the ops.
        """
        super().__init__()
        if not np.isfinite(initial_learning_rate) or initial_learning_rate <= 0:
            raise ValueError(
                "initial_learning_rate must be a finite number > 0; got "
                f"initial_learning_rate={initial_learning_rate!r}"
            )
        if int(total_steps) != total_steps or total_steps <= 0:
            raise ValueError(
                f"total_steps must be a whole number > 0; got total_steps={total_steps!r}"
            )
        if not np.isfinite(decay_factor) or decay_factor < 1:
            raise ValueError(
                f"decay_factor must be >= 1 (the rate is divided by it); got "
                f"decay_factor={decay_factor!r}"
            )
        if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"warmup_steps must be a whole number with 0 <= warmup_steps < "
                f"total_steps={total_steps}; got warmup_steps={warmup_steps!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.decay_factor = float(decay_factor)
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        """The learning rate (float32) at `step` (scalar or array of 0-based steps).

        The step is kept as a whole number rather than cast to float32 so that decay
        boundaries stay exact for any budget; float steps are floored.
        """
        with tf.name_scope(self.name):
            factor = schedule_factor(
                step, self.total_steps, self.decay_factor, self.warmup_steps
            )
            return tf.constant(self.initial_learning_rate, tf.float32) * factor

    def get_config(self) -> dict:
        """Every constructor argument."""
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "total_steps": self.total_steps,
            "decay_factor": self.decay_factor,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }


def schedule_values(
    initial_learning_rate: float,
    total_steps: int,
    decay_factor: float = 2.0,
    warmup_steps: int = 0,
) -> np.ndarray:
    """The learning rate at every step 0..total_steps-1 (float32 array), for plots."""
    schedule = PaperSchedule(initial_learning_rate, total_steps, decay_factor, warmup_steps)
    return np.asarray(schedule(tf.range(schedule.total_steps, dtype=tf.int64)))

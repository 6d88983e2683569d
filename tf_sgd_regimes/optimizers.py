"""SGD and Momentum in the paper's form (a ← m·a + g; w ← w − ε·a) and effective-LR helpers."""

from typing import Optional

import keras
from keras import ops

from tf_sgd_regimes import schedules

# Default momentum per optimizer name (the paper uses m = 0.9 for "Momentum").
OPTIMIZERS = {"sgd": 0.0, "momentum": 0.9}


def _check_momentum(momentum) -> float:
    """Return momentum as a float if 0 <= momentum < 1, else raise naming the field."""
    try:
        value = float(momentum)
    except (TypeError, ValueError):
        raise ValueError(f"momentum must be a number in [0, 1); got momentum={momentum!r}")
    if not 0.0 <= value < 1.0:
        # m = 1 would make the effective learning rate ε/(1 − m) infinite.
        raise ValueError(f"momentum must satisfy 0 <= momentum < 1; got momentum={momentum!r}")
    return value


def _check_positive(name: str, value) -> float:
    """Return value as a float if finite and > 0, else raise naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0; got {name}={value!r}")
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0; got {name}={value!r}")
    return number


def momentum_for(name: str, momentum: Optional[float] = None) -> float:
    """The momentum coefficient of optimizer `name`.

    Args:
      name: a key of OPTIMIZERS ("sgd" or "momentum").
      momentum: overrides the default of "momentum"; for "sgd" only 0 is accepted.

    Returns:
      The momentum m, 0 <= m < 1.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    if momentum is None:
        return OPTIMIZERS[name]
    value = _check_momentum(momentum)
    if name == "sgd" and value != 0.0:
        raise ValueError(
            f"optimizer 'sgd' has no momentum; got momentum={momentum!r}: "
            "use optimizer 'momentum' or leave momentum unset"
        )
    return value


def learning_rate_from_effective(effective_lr: float, momentum: float) -> float:
    """The raw rate ε = ε_eff · (1 − m) that gives effective rate ε_eff."""
    effective_lr = _check_positive("effective_lr", effective_lr)
    return effective_lr * (1.0 - _check_momentum(momentum))


def effective_from_learning_rate(learning_rate: float, momentum: float) -> float:
    """The effective rate ε_eff = ε / (1 − m) of raw rate ε."""
    learning_rate = _check_positive("learning_rate", learning_rate)
    return learning_rate / (1.0 - _check_momentum(momentum))


@keras.saving.register_keras_serializable(package="tf_sgd_regimes")
class PaperMomentum(keras.optimizers.Optimizer):
    """Heavy-ball momentum in the TF1 MomentumOptimizer form; momentum 0 is plain SGD.

    a ← m·a + g ; w ← w − ε·a. Unlike Keras's SGD(momentum) (v ← m·v − ε·g), the rate
    multiplies the whole accumulator, so a decay of ε takes effect at once on the step.

    The momentum lives in the non-trainable variable `momentum_variable` and the
    accumulators in `accumulators` (one per trainable variable, in build order), so an
    engine can reuse a compiled step for a new run by assigning them instead of
    rebuilding the optimizer.
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.9,
        name: str = "paper_momentum",
        **kwargs,
    ):
        """Stores the hyperparameters; variables are made in `build`.

        Args:
          learning_rate: the raw rate ε (not ε_eff): a float, a LearningRateSchedule or
            a callable, as for any Keras optimizer.
          momentum: m, 0 <= m < 1; 0 gives plain SGD exactly.
          name: the optimizer's name.
          **kwargs: base Keras optimizer arguments (e.g. global_clipnorm).
        """
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = _check_momentum(momentum)
        self.momentum_variable = None
        self.accumulators = []

    def build(self, var_list):
        """Creates the momentum variable and one zero accumulator per variable."""
        if self.built:
            return
        super().build(var_list)
        # "only_first_replica": one logical value under tf.distribute, like the base
        # optimizer's learning-rate variable; it is assigned from cross-replica context.
        self.momentum_variable = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(self.momentum),
            dtype="float32",
            aggregation="only_first_replica",
            name="momentum",
        )
        self.accumulators = self.add_optimizer_variables(var_list, "accumulator")

    def update_step(self, gradient, variable, learning_rate):
        """a ← m·a + g ; w ← w − ε·a for one variable."""
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        accumulator = self.accumulators[self._get_variable_index(variable)]
        self.assign(accumulator, ops.add(ops.multiply(momentum, accumulator), gradient))
        self.assign_sub(variable, ops.multiply(learning_rate, accumulator))

    def set_momentum(self, momentum: float) -> None:
        """Validate and assign a new momentum (config and variable) without rebuilding."""
        self.momentum = _check_momentum(momentum)
        if self.momentum_variable is not None:
            self.momentum_variable.assign(self.momentum)

    def zero_accumulators(self) -> None:
        """Set every accumulator to zero, as at the start of a run."""
        for accumulator in self.accumulators:
            if accumulator is not None:
                accumulator.assign(ops.zeros_like(accumulator))

    def get_config(self) -> dict:
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


def make_optimizer(
    name: str,
    effective_lr: float,
    total_steps: int,
    momentum: Optional[float] = None,
    decay_factor: float = 2.0,
    warmup_steps: int = 0,
    **kwargs,
) -> PaperMomentum:
    """The paper's optimizer `name` at effective rate ε_eff with the paper's schedule.

    Args:
      name: "sgd" or "momentum" (see OPTIMIZERS).
      effective_lr: ε_eff = ε / (1 − m), the rate users and configs give.
      total_steps: budget in steps for the schedule.
      momentum: overrides the default momentum of `name`.
      decay_factor: gamma of the schedule.
      warmup_steps: linear warmup length (0: off, as in the paper).
      **kwargs: passed to PaperMomentum (e.g. global_clipnorm=5.0 for the LSTM).

    Returns:
      A PaperMomentum whose rate is PaperSchedule(ε_eff · (1 − m), ...).
    """
    momentum = momentum_for(name, momentum)
    schedule = schedules.PaperSchedule(
        learning_rate_from_effective(effective_lr, momentum),
        total_steps,
        decay_factor=decay_factor,
        warmup_steps=warmup_steps,
    )
    return PaperMomentum(learning_rate=schedule, momentum=momentum, **kwargs)

"""The noisy quadratic model (Zhang et al. 2019) as an instant experiment: both batch-size regimes.

    python -m tf_sgd_regimes.run --experiment=nqm_epoch_budget --workdir=runs/nqm
    python -m tf_sgd_regimes.run --experiment=nqm_step_budget --workdir=runs/nqm_steps
    python -m tf_sgd_regimes.run --experiment=nqm_epoch_budget_sweep --workdir=runs/nqm_epochs

Cost: ~1 min on 2 CPU cores (~3 min when the cores are busy), nearly all of it the
per-cell ledger, oracle and TensorBoard files; the closed-form dynamics of all packs take
under a second. Epoch budget: 2 optimizers x 11 batch sizes (4..4096) x 11 effective
learning rates x 3 seeds = 726 cells. A seed is one draw from the exact Gaussian law of the
final weights, so best-k-of-n statistics behave as in a real sweep. Expected: optimal
effective LR doubles with B up to B* = 64 (SGD) and 1024 (Momentum), then stays flat;
SGD = Momentum below B = 64, Momentum ahead from B = 128.
"""

import ml_collections

from tf_sgd_regimes.configs import common
from tf_sgd_regimes.theory import nqm

BUDGETS = ("epochs", "steps", "variable")


def get_config(budget: str = "epochs") -> ml_collections.ConfigDict:
    """budget: "epochs" (constant epoch budget), "steps" (constant step budget) or
    "variable" (one batch size, a sweep of epoch budgets)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; known: {sorted(BUDGETS)}")
    config = common.base_config()
    config.engine = "nqm"
    config.nqm = ml_collections.ConfigDict(nqm.default_config())
    config.nqm.num_evals = 20  # loss-curve points per cell (TensorBoard, divergence checks)
    config.data.name = "nqm"  # no data set: NQMData stands in (nominal N = nqm.train_size)
    config.model.name = "nqm"
    config.budget.kind = "epochs"
    config.budget.epochs = float(config.nqm.epochs)
    config.sweep.batch_sizes = tuple(2**i for i in range(2, 13))  # 4 .. 4096
    # Wide enough to hold every optimum (2^-4 at B = 4) and both stability edges: SGD
    # diverges above 2 / h_max = 1.33, Momentum above 2 (1 + m) / ((1 - m) h_max) = 25.3.
    config.sweep.effective_lrs = common.powers_of_two(-5, 5)
    config.sweep.seeds = (0, 1, 2)
    config.analysis.selection_metric = "test_loss"
    config.analysis.selection_mode = "min"
    config.analysis.train_metric = "train_loss"
    config.analysis.best_k = 2  # best 2 of 3 (the paper's 12 of 15 at a smaller n)
    config.analysis.num_seeds = 3
    if budget == "epochs":
        config.description = "Noisy quadratic model, constant epoch budget, SGD vs Momentum"
        config.cost = "~1 min on 2 CPU cores"
    elif budget == "steps":
        config.description = "Noisy quadratic model, constant step budget, SGD vs Momentum"
        config.cost = "~1 min on 2 CPU cores"
        config.budget.kind = "steps"
        # The epoch budget's step count at B = 16 (4096 steps): epochs grow with B above it.
        config.budget.steps = nqm.epoch_budget_steps(config.nqm.epochs, config.nqm.train_size, 16)
    else:
        config.description = "Noisy quadratic model, B = 16, a sweep of epoch budgets"
        config.cost = "~30 s on 2 CPU cores"
        config.sweep.batch_sizes = (16,)  # small B: the noise-dominated regime
        config.sweep.epoch_budgets = tuple(float(2**i) for i in range(-2, 5))  # 1/4 .. 16
    return config

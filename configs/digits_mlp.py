"""Embedded default: an MLP on scikit-learn's 8x8 digits under a constant epoch budget.

    python -m tf_sgd_regimes.run            # same as --experiment=digits_mlp_epoch_budget

Cost: about 3 minutes on 2 CPU cores (no download, no accelerator); seconds on a TPU v3-8.
2 optimizers x 9 batch sizes (4..1024) x 13 effective learning rates x 3 seeds = 702 cells,
trained as 18 packs of 39 members.
"""

from tf_sgd_regimes.configs import common


def get_config():
    config = common.base_config()
    config.name = "digits_mlp_epoch_budget"
    config.description = "MLP on sklearn digits, constant epoch budget, SGD vs Momentum"
    config.cost = "~3 min on 2 CPU cores"
    config.data.name = "digits"
    config.data.test_fraction = 0.2
    config.data.split_seed = 0
    config.model.name = "mlp"
    config.model.hidden = (128, 128)
    config.l2 = 1e-4
    config.budget.kind = "epochs"
    config.budget.epochs = 20.0
    config.sweep.batch_sizes = tuple(2**i for i in range(2, 11))  # 4 .. 1024
    # Wide enough that each batch size's optimum is interior (checked in the report).
    config.sweep.effective_lrs = common.powers_of_two(-8, 4)
    config.sweep.seeds = (0, 1, 2)
    config.analysis.best_k = 2  # best 2 of 3, the paper's 12 of 15 in spirit (80%)
    config.analysis.num_seeds = 3
    return config

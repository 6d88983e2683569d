"""Embedded default: an MLP on scikit-learn's 8x8 digits under a constant epoch budget.

    python -m tf_sgd_regimes.run            # same as --experiment=digits_mlp_epoch_budget

Cost: under a minute on 2 CPU cores (no download, no accelerator; BENCHMARKS.md); seconds on a TPU.
2 optimizers x 11 batch sizes (1..1024) x 13 effective learning rates x 3 seeds = 858 cells,
trained as 11 packs of 78 members (one pack per batch size: both optimizers, every learning
rate and seed side by side).
"""

from tf_sgd_regimes.configs import common


def get_config():
    config = common.base_config()
    config.name = "digits_mlp_epoch_budget"
    config.description = "MLP on sklearn digits, constant epoch budget, SGD vs Momentum"
    config.cost = "~1 min on 2 CPU cores"
    config.data.name = "digits"
    config.data.test_fraction = 0.2
    config.data.split_seed = 0
    config.model.name = "mlp"
    # Small on purpose: a packed step of small batches is bound by memory traffic over
    # members x parameters (the momentum update touches every weight), and 32-32 already
    # fits the 8x8 digits well (~97% test accuracy).
    config.model.hidden = (32, 32)
    config.l2 = 0.0
    config.budget.kind = "epochs"
    config.budget.epochs = 10.0  # steps = 10 * 1437 / B: 14,370 at B=1, 14 at B=1024
    config.sweep.batch_sizes = tuple(2**i for i in range(0, 11))  # 1 .. 1024
    # Wide enough that each batch size's optimum is interior (checked in the report).
    config.sweep.effective_lrs = common.powers_of_two(-8, 4)
    config.sweep.seeds = (0, 1, 2)
    config.analysis.best_k = 2  # best 2 of 3: the paper's 12 of 15 in spirit (80%)
    config.analysis.num_seeds = 3
    # Gradient noise scale B_simple at init and mid-training, shown beside B* in the report
    # (noise_probe.py): one big batch of 256 (8 x 32) per member and time, a few seconds.
    config.train.noise_scale.enabled = True
    config.train.noise_scale.num_batches = 1
    # One intra-op thread: this pack's kernels are microseconds long, and handing them to a
    # second thread cost more than it gave (whole sweep ~1.3-1.5x faster, same records;
    # BENCHMARKS.md "One intra-op thread").
    config.train.intra_op_threads = 1
    return config

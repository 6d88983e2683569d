"""Embedded versions of each paper family that train on CPU in minutes, with no download.

    python -m tf_sgd_regimes.run --experiment=digits_cnn_epoch_budget
    python -m tf_sgd_regimes.run --experiment=digits_wrn_epoch_budget
    python -m tf_sgd_regimes.run --experiment=digits_autoencoder_epoch_budget
    python -m tf_sgd_regimes.run --experiment=synthetic_lstm_epoch_budget

Cost on 2 CPU cores, measured (BENCHMARKS.md, "Embedded experiments"); on a TPU v3-8
seconds to a minute, where dispatch, not FLOPs, bounds such small models (an estimate):

| experiment | family | cells | 2 CPU cores |
|---|---|---|---|
| digits_cnn_epoch_budget | small CNN, sklearn digits, 10 epochs | 2 x 6 x 10 x 3 = 360 | ~1.5 min |
| digits_wrn_epoch_budget | WRN-10-1 + ghost BN (16), 10 epochs | 2 x 3 x 7 x 3 = 126 | ~4 min |
| digits_autoencoder_epoch_budget | 64-32-8-32-64 autoencoder, 20 ep. | 2x6x12x3 = 432 | ~1 min |
| synthetic_lstm_epoch_budget | 1-layer LSTM, Markov language, 6 ep. | 2x5x14x3 = 420 | ~6 min |

Each mirrors its paper family: the same loss, metric, schedule, momentum form, L2 scope
and selection rule (best 2 of 3 seeds, the paper's 12 of 15 in spirit), on data that
ships with a dependency (scikit-learn's digits) or is generated (a Markov chain whose
optimal perplexity is known exactly: the report can say how close each cell got).
"""

from tf_sgd_regimes.configs import common


def _base(data_name: str, model: dict):
    config = common.base_config()
    config.data = dict(name=data_name, test_fraction=0.2, split_seed=0)
    config.model = model
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.seeds = (0, 1, 2)
    config.analysis.best_k = 2
    config.analysis.num_seeds = 3
    config.train.eval_batch_size = 512
    return config


def digits_cnn_epoch_budget():
    """Small CNN on 8x8 digits, 10 epochs (the WRN family's classification setting)."""
    config = _base("digits_images", dict(name="small_cnn", filters=(8, 16)))
    config.description = "small CNN on sklearn digits, 10 epochs, SGD vs Momentum"
    config.cost = "~1.5 min on 2 CPU cores"
    config.l2 = 5e-4
    config.budget.epochs = 10.0
    config.sweep.batch_sizes = tuple(2**i for i in range(3, 9))  # 8 .. 256
    # Measured optima: SGD 2^-1..2^1, Momentum up to 2^2 (then the grid's edge) at B >= 32.
    config.sweep.effective_lrs = common.powers_of_two(-5, 4)
    config.train.divergence_loss = 100.0
    # One intra-op thread, so each pack trains in one shard per core side by side
    # (shards.member_shards): the sweep took 0:20-0:21 against 0:27-0:29 with TensorFlow's
    # default threads and 0:30-0:31 with one thread in one shard (BENCHMARKS.md, "Members
    # in shards").
    config.train.intra_op_threads = 1
    return config


def digits_wrn_epoch_budget():
    """WRN-10-1 with ghost batch norm on digits: the paper's BN Wide-ResNet in miniature."""
    config = _base("digits_images", dict(name="small_wrn", depth=10, width=1,
                                         normalization="batch_norm", ghost_batch_size=16))
    config.description = "WRN-10-1 (ghost BN 16) on sklearn digits, 10 epochs, SGD vs Momentum"
    config.cost = "~3 min on 2 CPU cores"
    # 1,437 training images: ghost batches of 16 keep the BN noise of the paper's 64/50k.
    config.l2 = 5e-4
    config.l2_scope = "all"
    config.budget.epochs = 10.0
    config.sweep.batch_sizes = (32, 128, 512)
    # A 2^-5..2^1 sweep put 5 of 6 optima on its top edge (2^1).
    config.sweep.effective_lrs = common.powers_of_two(-3, 3)
    config.sweep.pack_size = 0
    config.train.divergence_loss = 100.0
    # One intra-op thread: each pack trains in two shards side by side, which share one
    # trace (shards.SharedCall). Whole sweep 147-170 s against 193-208 s with TensorFlow's
    # default threads, alternated (BENCHMARKS.md, "Shards of one shape share one trace").
    config.train.intra_op_threads = 1
    return config


def digits_autoencoder_epoch_budget():
    """64-32-8-32-64 autoencoder on digits, 20 epochs (the MNIST autoencoder in miniature)."""
    config = _base("digits_autoencoder", dict(name="small_autoencoder", widths=(32, 8)))
    config.description = "autoencoder on sklearn digits, 20 epochs, SGD vs Momentum"
    config.cost = "~1 min on 2 CPU cores"
    config.l2 = 1e-5
    config.budget.epochs = 20.0
    config.sweep.batch_sizes = tuple(2**i for i in range(3, 9))  # 8 .. 256
    # Measured optima: SGD 0.32-0.64, Momentum 1.28 (then the grid's edge) from B = 16.
    config.sweep.effective_lrs = tuple(0.01 * 2.0**k for k in range(-2, 10))
    config.analysis.selection_metric = "test_mse"
    config.analysis.selection_mode = "min"
    config.analysis.train_metric = "train_mse"
    config.train.divergence_loss = 1e3
    # Tiny dense kernels, as in the demo: one intra-op thread (whole sweep 20, 20 s against
    # 29, 24 s with TensorFlow's default; BENCHMARKS.md "One intra-op thread").
    config.train.intra_op_threads = 1
    return config


def synthetic_lstm_epoch_budget():
    """One-layer LSTM on a 32-word Markov language, 6 epochs of 30k tokens."""
    config = common.base_config()
    config.data = dict(name="synthetic_language", vocab_size=32, num_train_tokens=30_000,
                       num_test_tokens=10_000, unroll=20, chain_seed=0)
    config.model = dict(name="small_lstm_lm", embedding_size=32, units=64, num_layers=1,
                        dropout_rate=0.0)
    config.description = ("LSTM on a synthetic Markov language (optimal perplexity known), "
                          "6 epochs, SGD vs Momentum")
    config.cost = "~6 min on 2 CPU cores (21 min measured on a loaded machine)"
    config.budget.epochs = 6.0
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.batch_sizes = (8, 16, 32, 64, 128)
    # sqrt(2) grid, as PTB. The training loss is summed over the 20 unrolled steps
    # (Zaremba et al.'s scale, tasks.py). Measured optima on this scale (BENCHMARKS.md):
    # SGD 2^1 at every B, Momentum 2^1 (B = 8) .. 2^3.5 (B = 128); 20x these are the
    # 2^4.5..2^7 a per-token-mean loss needed.
    config.sweep.effective_lrs = common.powers_of_two(-1.5, 5, 0.5)
    config.sweep.seeds = (0, 1, 2)
    config.train.clip_grad_norm = 5.0
    # Per window of 20 tokens (the training objective): 20 per token; ln(32) = 3.5 at the start.
    config.train.divergence_loss = 20.0 * 20
    config.train.eval_batch_size = 16
    config.analysis.best_k = 2
    config.analysis.num_seeds = 3
    config.analysis.selection_metric = "test_perplexity"
    config.analysis.selection_mode = "min"
    config.analysis.train_metric = "train_perplexity"
    return config


_VARIANTS = {
    "digits_cnn_epoch_budget": digits_cnn_epoch_budget,
    "digits_wrn_epoch_budget": digits_wrn_epoch_budget,
    "digits_autoencoder_epoch_budget": digits_autoencoder_epoch_budget,
    "synthetic_lstm_epoch_budget": synthetic_lstm_epoch_budget,
}


def get_config(variant: str = "digits_cnn_epoch_budget"):
    return common.variant_config(_VARIANTS, variant)

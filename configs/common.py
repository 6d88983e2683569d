"""Fields every experiment shares, with the paper's defaults (DESIGN.md)."""

import ml_collections


def powers_of_two(low: int, high: int, step: float = 1.0) -> tuple:
    """2**low, ..., 2**high; step 0.5 gives the sqrt(2) grid the paper uses for the LSTM."""
    count = int(round((high - low) / step)) + 1
    return tuple(float(2.0 ** (low + i * step)) for i in range(count))


def variant_config(variants: dict, variant: str) -> ml_collections.ConfigDict:
    """The config of `variant` (a name in `variants`, name -> config function), named."""
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(variants)}")
    config = variants[variant]()
    config.name = variant
    return config


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = ""
    config.description = ""
    config.cost = ""
    config.engine = "keras"  # "keras" (engine.py) or "nqm" (theory/nqm_engine.py)
    config.data = ml_collections.ConfigDict({"name": ""})
    config.model = ml_collections.ConfigDict({"name": ""})
    config.l2 = 0.0  # coefficient of 0.5 * l2 * sum(w^2)
    config.l2_scope = "kernels"  # "kernels" or "all" (models/regularization.py)

    # The budget: "epochs" (steps = epochs * N / B, the constant epoch budget),
    # "steps" (the same number of steps at every B: the constant step budget).
    # A variable epoch budget sweeps sweep.epoch_budgets at one batch size.
    config.budget = ml_collections.ConfigDict({"kind": "epochs", "epochs": 0.0, "steps": 0})
    config.schedule = ml_collections.ConfigDict({"decay_factor": 2.0, "warmup_steps": 0})

    config.sweep = ml_collections.ConfigDict()
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.momentum = 0.9
    config.sweep.batch_sizes = (64,)
    config.sweep.effective_lrs = powers_of_two(-6, 0)
    config.sweep.seeds = (0, 1, 2)
    config.sweep.epoch_budgets = ()  # non-empty: a variable epoch budget sweep
    # Grow the LR grid where an optimum sits on its edge (edges.py, --extend_edges).
    config.sweep.extend_edges = ml_collections.ConfigDict({
        "enabled": False, "max_rounds": 4, "max_added_per_edge": 4, "lrs_per_round": 1,
        "step": 0.0})  # step 0 = the grid's own ratio at that edge
    config.sweep.pack_size = 0  # members per pack; 0 = every lr and seed of one (opt, B)
    # The order the batch sizes' packs run in: "spread" (largest, smallest, then bisecting,
    # so the ETA sees the range's costs early; grid.spread) or "ascending". Results per
    # cell do not depend on it.
    config.sweep.pack_order = "spread"

    config.train = ml_collections.ConfigDict()
    config.train.steps_per_call = 128  # steps per compiled call (amortises dispatch)
    config.train.divergence_loss = 1e3  # a member whose training loss exceeds this diverged
    config.train.clip_grad_norm = 0.0  # 0 = no clipping
    config.train.eval_batch_size = 1024
    config.train.jit_compile = "auto"  # true / false / auto (engine.use_xla: measured; TPU: XLA)
    # Training steps per iteration of the chunk's loop (engine.unroll_steps): auto = 2 when
    # the whole chunk is one XLA program, which then copies fewer loop-carried weights,
    # else 1. Part of a cell's identity, like jit_compile: XLA fuses across the unrolled
    # steps, so the last bits differ, and chaotic high-rate members can end elsewhere
    # (BENCHMARKS.md "Unrolled XLA loop").
    config.train.unroll_steps = "auto"
    # TensorFlow's intra-op threads, set when the sweep starts (cpu_threads.py); 0 keeps
    # TensorFlow's default, one per core. 1 suits packs of tiny models (the demo).
    config.train.intra_op_threads = 0
    # Shards of a pack trained side by side on threads (shards.member_shards): 0 = auto,
    # one per core where kernels run on one intra-op thread (above), else 1. Speed only,
    # like the pack size: a member's last bits may differ between shard counts.
    config.train.member_shards = 0
    config.train.log_every_steps = 0  # TensorBoard scalars every chunk when 0
    # Seconds between checkpoints of a running pack (a kill loses at most this much
    # training); 0 = none except on SIGTERM. Checked after every chunk of steps.
    config.train.checkpoint_every_s = 60.0
    # Gradient noise scale B_simple (McCandlish et al. 2018) of every member at step 0 and
    # mid-budget (noise_probe.py), stored as metrics noise_scale_init / noise_scale_mid.
    config.train.noise_scale = ml_collections.ConfigDict({
        "enabled": False,
        "batch_small": 32,
        "batch_big": 256,  # a multiple of batch_small, accumulated over micro-batches
        "num_batches": 4,  # big batches averaged per measurement
    })

    # TensorBoard (summaries.py): one HParams session per cell up to this many cells in
    # the sweep; above, one per grid point (optimizer, B, lr, budget) with its seeds'
    # means, since TensorBoard's load time grows with its run count (BENCHMARKS.md).
    config.tensorboard = ml_collections.ConfigDict({"per_cell_sessions_max": 2000})

    config.strategy = "auto"  # auto / cpu / mirrored / multi_worker / tpu
    config.tpu_address = ""

    config.analysis = ml_collections.ConfigDict()
    config.analysis.selection_metric = "test_accuracy"
    config.analysis.selection_mode = "max"
    config.analysis.train_metric = "train_loss"
    config.analysis.best_k = 2
    config.analysis.num_seeds = 3
    config.analysis.range_rule_std = 1.0
    config.analysis.split = "test"
    config.analysis.paper_reference = ""
    return config


# ---------------------------------------------------------------- fidelity-card helpers
# Facts every paper experiment shares (reference/fidelity.py explains cards and sources).


def schedule_facts(warmup_source: str = "appendix B.1 (the schedule has no warmup phase)",
                   warmup_quote: str = "") -> list:
    from tf_sgd_regimes.reference import fidelity as fc

    return [
        fc.Fact("schedule", "constant for half the budget, then divided by gamma every 1/20",
                fc.APPENDIX, quote="we hold the learning rate constant for $N_{epochs}/2$ , "
                "before decaying the learning rate by a factor of $\\gamma$ every "
                "$N_{epochs}/20$"),
        fc.Fact("decay factor", 2.0, fc.APPENDIX,
                quote="Unless specified otherwise, $\\gamma = 2$", field="schedule.decay_factor"),
        fc.Fact("warmup", 0, fc.APPENDIX if warmup_quote else warmup_source,
                quote=warmup_quote, field="schedule.warmup_steps"),
        fc.Fact("momentum", 0.9, fc.MAIN_TEXT, field="sweep.momentum",
                note="a <- m a + g, w <- w - lr a; effective lr = lr / (1 - m)"),
    ]


def not_applicable(*topics) -> list:
    from tf_sgd_regimes.reference import fidelity as fc

    return [fc.Fact(topic, None, fc.NOT_APPLICABLE) for topic in topics]

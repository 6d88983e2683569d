"""Wide-ResNets on CIFAR-10/100: the paper's figures 1, 5, 6 and tables 3, 4, 5.

    python -m tf_sgd_regimes.run --experiment=wrn16_4_cifar10_epoch_budget --workdir=runs/fig1

Expected cost (ESTIMATES, not measurements: forward FLOPs per example x 3 for training x
examples processed over all cells; "CPU" at the rate tools/benchmark_models.py measured
on 2 cores (70 GFLOP/s WRN-16-4, 64 GFLOP/s WRN-28-10), "v3-8" at 35% of its 420 TFLOP/s):

| experiment | paper | cells | training FLOPs | 2 CPU cores | TPU v3-8 |
|---|---|---|---|---|---|
| wrn16_4_cifar10_epoch_budget | fig 1 | 3,510 | 8.3e19 | ~38 years | ~6.5 days |
| wrn16_4_cifar10_lr_sweep | fig 5 | 960 | 2.3e19 | ~10 years | ~1.8 days |
| wrn16_4_cifar10_skipinit_epoch_budget | fig 6 | 5,040 | 1.2e20 | ~55 years | ~9.3 days |
| wrn16_4_cifar10_skipinit_step_budget | table 3 | 1,320 | 2.5e20 | ~110 years | ~20 days |
| wrn28_10_cifar100_step_budget | table 4 | 1,155 | 1.7e21 | ~840 years | ~130 days |
| wrn28_10_cifar100_skipinit_step_budget | table 5 | 945 | 2.7e21 | ~1,300 years | ~210 days |

WRN-16-4 is 0.79 GFLOPs per 32x32 image forward, WRN-28-10 10.5 GFLOPs (tf.profiler).
These are the paper's full grids (15 seeds per point); shrink them with overrides, e.g.
--config.sweep.seeds='(0,1,2)' --config.sweep.batch_sizes='(64,256,1024)'. The largest
WRN-28-10 batches (8192, 16384) do not fit a v3-8's memory: the engine has no gradient
accumulation, so they need a larger slice (batch size is the global batch).

Grid bounds the paper does not print (figure 1, 5, 6 learning-rate ranges and figure 1's
batch-size range) are chosen so each optimum lies inside the grid with room on both
sides (the report flags an optimum on the edge).
"""

from tf_sgd_regimes.configs import common


def _base(dataset: str = "cifar10", depth: int = 16, width: int = 4,
          normalization: str = "batch_norm"):
    config = common.base_config()
    config.data = dict(name=dataset, data_dir=None, download=False, validation_fraction=0.0,
                       augment=True)
    config.model = dict(name="wide_resnet", depth=depth, width=width,
                        normalization=normalization, ghost_batch_size=64)
    if normalization == "skipinit":
        # Regularized SkipInit (De & Smith 2020): SkipInit plus biases and dropout before
        # the classifier. The appendix names it but gives no details; per-channel conv
        # biases and a drop rate of 0.2 are our choices (fidelity card).
        config.model.update(dict(conv_biases=True, dropout_rate=0.2))
    config.l2 = 5e-4  # the paper's L2 for every residual network
    # BN: every parameter decayed, as Zagoruyko & Komodakis. SkipInit: "Regularized
    # SkipInit" puts the SkipInit scalars and biases under the L2 term too.
    config.l2_scope = "all"
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.momentum = 0.9
    config.sweep.seeds = tuple(range(15))
    config.analysis.best_k = 12  # mean of the best 12 of 15 runs
    config.analysis.num_seeds = 15
    config.analysis.selection_metric = "test_accuracy"
    config.analysis.selection_mode = "max"
    config.train.eval_batch_size = 1000  # divides the 10,000 test images and 8 replicas
    # Cross-entropy starts at ln(C) <= 4.6: a loss of 100 is a run that has left the rails.
    config.train.divergence_loss = 100.0
    # One learning rate's 15 seeds per pack: memory, not compute, bounds a pack of WRNs.
    config.sweep.pack_size = 15
    return config


def _epoch_budget(normalization: str):
    config = _base(normalization=normalization)
    config.budget.kind = "epochs"
    config.budget.epochs = 200.0
    config.sweep.batch_sizes = tuple(2**i for i in range(4, 13))  # 16 .. 4096
    return config


def wrn16_4_cifar10_epoch_budget():
    """Figure 1: WRN-16-4 with ghost batch norm, 200 epochs, SGD and Momentum."""
    config = _epoch_budget("batch_norm")
    config.description = "WRN-16-4 (ghost BN) CIFAR-10, 200 epochs, SGD vs Momentum (fig 1)"
    # Optima run from ~2^-4 at B=16 to ~2^3 at B=4096 (table 4's BN optima reach 2^5).
    config.sweep.effective_lrs = common.powers_of_two(-7, 5)
    config.cost = "~6.5 days on a TPU v3-8 (estimate); ~38 years on 2 CPU cores"
    return config


def wrn16_4_cifar10_lr_sweep():
    """Figure 5: full learning-rate sweeps at B = 64 and 1024, 200 epochs."""
    config = wrn16_4_cifar10_epoch_budget()
    config.description = "WRN-16-4 (ghost BN) CIFAR-10, LR sweep at B=64 and 1024 (fig 5)"
    config.sweep.batch_sizes = (64, 1024)
    # Down to tiny rates, where SGD and Momentum coincide (the figure's left side).
    config.sweep.effective_lrs = common.powers_of_two(-10, 5)
    config.cost = "~1.8 days on a TPU v3-8 (estimate); ~10 years on 2 CPU cores"
    return config


def wrn16_4_cifar10_skipinit_epoch_budget():
    """Figure 6: WRN-16-4 without batch norm (Regularized SkipInit), 200 epochs."""
    config = _epoch_budget("skipinit")
    config.description = ("WRN-16-4 Regularized SkipInit CIFAR-10, 200 epochs, SGD vs "
                          "Momentum (fig 6)")
    # The appendix reads this figure as SGD flat for "B <~ 8" and Momentum for "B <~ 256":
    # the grid starts at B = 2 so two batch sizes sit below 8 (our choice of the lower
    # bound; the text does not print the figure's range).
    config.sweep.batch_sizes = tuple(2**i for i in range(1, 13))  # 2 .. 4096
    # Without BN the critical rate is lower: table 3's optima span 2^-4 .. 2^0, and the
    # optimum halves with B below the breakpoint (about 2^-7 at B = 2).
    config.sweep.effective_lrs = common.powers_of_two(-10, 3)
    config.cost = "~9.3 days on a TPU v3-8 (estimate); ~55 years on 2 CPU cores"
    return config


def wrn16_4_cifar10_skipinit_step_budget():
    """Table 3: WRN-16-4 Regularized SkipInit, 156,250 steps, Momentum, B 16..2048."""
    config = _base(normalization="skipinit")
    config.description = ("WRN-16-4 Regularized SkipInit CIFAR-10, 156,250 steps, Momentum "
                          "(table 3)")
    config.budget.kind = "steps"
    config.budget.steps = 156_250  # 200 epochs at B = 64
    config.sweep.optimizers = ("momentum",)
    config.sweep.batch_sizes = tuple(2**i for i in range(4, 12))  # 16 .. 2048
    config.sweep.effective_lrs = common.powers_of_two(-7, 3)  # table 3: 2^-4 .. 2^1
    config.analysis.paper_reference = "table3"
    config.cost = "~20 days on a TPU v3-8 (estimate); ~110 years on 2 CPU cores"
    return config


def wrn28_10_cifar100_step_budget():
    """Table 4: WRN-28-10 with ghost batch norm on CIFAR-100, 9,765 steps, B 256..16384."""
    config = _base("cifar100", depth=28, width=10, normalization="batch_norm")
    config.description = "WRN-28-10 (ghost BN) CIFAR-100, 9,765 steps, Momentum (table 4)"
    config.budget.kind = "steps"
    config.budget.steps = 9_765  # 200 epochs at B = 1024
    config.sweep.optimizers = ("momentum",)
    config.sweep.batch_sizes = tuple(2**i for i in range(8, 15))  # 256 .. 16384
    config.sweep.effective_lrs = common.powers_of_two(-2, 8)  # table 4: 2^1 .. 2^5
    config.sweep.pack_size = 1  # 36.5M parameters and large batches: one member per pack
    config.analysis.paper_reference = "table4"
    config.cost = "~130 days on a TPU v3-8 (estimate; B >= 8192 needs a larger slice)"
    return config


def wrn28_10_cifar100_skipinit_step_budget():
    """Table 5: WRN-28-10 Regularized SkipInit on CIFAR-100, 156,250 steps, B 32..2048."""
    config = wrn28_10_cifar100_step_budget()
    config.description = ("WRN-28-10 Regularized SkipInit CIFAR-100, 156,250 steps, "
                          "Momentum (table 5)")
    config.model.update(dict(normalization="skipinit", conv_biases=True, dropout_rate=0.2))
    config.budget.steps = 156_250  # 200 epochs at B = 64
    config.sweep.batch_sizes = tuple(2**i for i in range(5, 12))  # 32 .. 2048
    # Table 5 prints 0.025, 0.05, 0.1, 0.2: a doubling grid anchored at 0.2, not at 1.
    config.sweep.effective_lrs = tuple(0.2 * 2.0**k for k in range(-6, 3))
    config.analysis.paper_reference = "table5"
    config.cost = "~210 days on a TPU v3-8 (estimate)"
    return config


# ------------------------------------------------------------------------ fidelity cards


def _card(variant: str) -> list:
    """The fidelity card of one variant (reference/fidelity.py)."""
    from tf_sgd_regimes.reference import fidelity as fc

    F = fc.Fact
    skipinit = "skipinit" in variant
    wide = variant.startswith("wrn28_10")
    best = {  # the appendix's words for best k of n, per experiment
        "wrn16_4_cifar10_skipinit_epoch_budget": "report the mean performance of the best "
                                                 "12 of 15 runs",
    }.get(variant, "we provide the average performance of the best 12 out of 15 training runs"
          if "step_budget" in variant else "")
    facts = [
        F("model", "wide_resnet", fc.MAIN_TEXT if not wide else fc.APPENDIX,
          quote="28-10 Wide-ResNet" if wide else "", field="model.name"),
        F("widths", 28 if wide else 16, fc.APPENDIX if wide or skipinit else fc.MAIN_TEXT,
          quote=("28-10 Wide-ResNet" if wide else "16-4 Wide-ResNet" if skipinit else ""),
          field="model.depth"),
        F("widths", 10 if wide else 4, fc.APPENDIX if wide or skipinit else fc.MAIN_TEXT,
          quote=("28-10 Wide-ResNet" if wide else "16-4 Wide-ResNet" if skipinit else ""),
          field="model.width"),
        F("init range", "He-normal convolutions",
          "Zagoruyko & Komodakis 2016 (their code)"),
        F("augmentation", True, fc.MAIN_TEXT, field="data.augment",
          note="pad 4, random 32x32 crop, horizontal flip"),
        F("L2", 5e-4, fc.MAIN_TEXT, field="l2"),
        F("gradient clip", 0.0, fc.MAIN_TEXT, field="train.clip_grad_norm",
          note="the paper clips only the LSTM"),
        F("LR grid spacing", 2.0, fc.MAIN_TEXT, field="derived.lr_ratio",
          note="powers of 2"),
        F("LR grid bounds", None, fc.OUR_CHOICE,
          note="wide enough that every optimum is interior (the report flags edges)"),
        *fc.best_k_of_n(12, 15, fc.APPENDIX if best else fc.MAIN_TEXT, quote=best),
        F("selection split", "test", fc.APPENDIX, quote="maximizes the test accuracy",
          field="analysis.split"),
        F("selection metric", "test_accuracy", fc.APPENDIX,
          quote="maximizes the test accuracy", field="analysis.selection_metric"),
        F("training loss", "softmax cross-entropy + 0.5 * l2 * |w|^2", fc.MAIN_TEXT),
        F("unroll", None, fc.NOT_APPLICABLE),
    ] + common.schedule_facts()
    if skipinit:
        facts += [
            F("normalisation", "skipinit", fc.APPENDIX,
              quote="without batch normalization using Regularized SkipInit (De & Smith, "
                    "2020)" if not wide else "without batch normalization using Regularized "
                                             "SkipInit", field="model.normalization"),
            F("normalisation", True, fc.OUR_CHOICE, field="model.conv_biases",
              note="Regularized SkipInit's biases as a per-channel bias on every conv"),
            F("dropout", 0.2, fc.OUR_CHOICE, field="model.dropout_rate",
              note="Regularized SkipInit's dropout before the classifier; rate not stated"),
            F("L2 scope", "all", fc.OUR_CHOICE, field="l2_scope",
              note="the SkipInit scalars and biases under the L2 term too"),
            F("ghost batch size", None, fc.NOT_APPLICABLE),
        ]
    else:
        facts += [
            F("normalisation", "batch_norm", fc.APPENDIX if wide else fc.MAIN_TEXT,
              quote="28-10 Wide-ResNet with batch normalization" if wide else "",
              field="model.normalization"),
            F("ghost batch size", 64, fc.MAIN_TEXT, field="model.ghost_batch_size"),
            F("dropout", 0.0, fc.MAIN_TEXT, note="none mentioned; the model builds none "
                                                 "under batch norm"),
            F("L2 scope", "all", "Zagoruyko & Komodakis 2016 (their code decays every "
                                 "parameter)", field="l2_scope"),
        ]
    budget = {
        "wrn16_4_cifar10_epoch_budget": [
            F("budget", 200.0, fc.MAIN_TEXT, field="budget.epochs"),
            F("batch sizes", tuple(2**i for i in range(4, 13)), fc.OUR_CHOICE,
              field="sweep.batch_sizes", note="figure 1's range is not printed")],
        "wrn16_4_cifar10_lr_sweep": [
            F("budget", 200.0, fc.APPENDIX, quote="trained with batch normalization on "
              "CIFAR-10 for 200 epochs", field="budget.epochs"),
            F("batch sizes", (64, 1024), fc.APPENDIX,
              quote="two batch sizes, 64 and 1024", field="sweep.batch_sizes")],
        "wrn16_4_cifar10_skipinit_epoch_budget": [
            F("budget", 200.0, fc.APPENDIX, quote="on CIFAR-10 for 200 epochs",
              field="budget.epochs"),
            F("batch sizes", tuple(2**i for i in range(1, 13)), fc.OUR_CHOICE,
              field="sweep.batch_sizes",
              note="2..4096: the appendix reads figure 6 at B <~ 8 (SGD) and B <~ 256 "
                   "(Momentum) but does not print its range")],
        "wrn16_4_cifar10_skipinit_step_budget": [
            F("budget", 156_250, fc.APPENDIX, quote="for 156,250 updates",
              field="budget.steps"),
            F("batch sizes", tuple(2**i for i in range(4, 12)), "appendix (table 3 rows)",
              field="sweep.batch_sizes")],
        "wrn28_10_cifar100_step_budget": [
            F("budget", 9_765, fc.APPENDIX, quote="for 9765 updates", field="budget.steps"),
            F("batch sizes", tuple(2**i for i in range(8, 15)), "appendix (table 4 rows)",
              field="sweep.batch_sizes")],
        "wrn28_10_cifar100_skipinit_step_budget": [
            F("budget", 156_250, fc.APPENDIX, quote="for 156,250 updates",
              field="budget.steps"),
            F("batch sizes", tuple(2**i for i in range(5, 12)), "appendix (table 5 rows)",
              field="sweep.batch_sizes"),
            F("LR grid spacing", 2.0, "appendix (table 5 prints 0.025 .. 0.2)",
              note="doubling grid anchored at 0.2")],
    }[variant]
    return facts + budget


_VARIANTS = {
    "wrn16_4_cifar10_epoch_budget": wrn16_4_cifar10_epoch_budget,
    "wrn16_4_cifar10_lr_sweep": wrn16_4_cifar10_lr_sweep,
    "wrn16_4_cifar10_skipinit_epoch_budget": wrn16_4_cifar10_skipinit_epoch_budget,
    "wrn16_4_cifar10_skipinit_step_budget": wrn16_4_cifar10_skipinit_step_budget,
    "wrn28_10_cifar100_step_budget": wrn28_10_cifar100_step_budget,
    "wrn28_10_cifar100_skipinit_step_budget": wrn28_10_cifar100_skipinit_step_budget,
}


def get_config(variant: str = "wrn16_4_cifar10_epoch_budget"):
    return common.variant_config(_VARIANTS, variant)


CARDS = {variant: _card(variant) for variant in _VARIANTS}

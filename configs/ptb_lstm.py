"""The LSTM language model on Penn Treebank: the paper's figure 7, table 6 and figure 9.

    python -m tf_sgd_regimes.run --experiment=ptb_lstm_step_budget --workdir=runs/table6 \
        --config.data.data_dir=PATH/simple-examples/data     # or --config.data.download=True

Expected cost (ESTIMATES, not measurements: 0.93 GFLOPs per 35-token window forward
(analytic: 2 x (2 x 4 x 650 x 1300 + 650 x 10,000) per token) x 3 for training x windows
processed; "CPU" at the 37 GFLOP/s tools/benchmark_models.py measured on 2 cores, "v3-8"
at 20% of 420 TFLOP/s, as recurrent steps use the matrix units poorly):

| experiment | paper | cells | training FLOPs | 2 CPU cores | TPU v3-8 |
|---|---|---|---|---|---|
| ptb_lstm_epoch_budget | fig 7 | 1,680 | 4.9e18 | ~4 years | ~16 hours |
| ptb_lstm_step_budget | table 6 | 385 | 1.8e18 | ~1.5 years | ~6 hours |
| ptb_lstm_variable_epoch_budget | fig 9 | 728 | 6.0e18 | ~5 years | ~20 hours |

A window of B streams x 35 tokens is one step; one epoch at B = 64 is 414 steps (929,589
training tokens), so 40 epochs = 16,560 steps, table 6's budget. Grids step by sqrt(2) as
the paper's (table 6 prints 1.4, 2.0, 2.8, 5.6); bounds it does not print are chosen so
every optimum is interior. 7 seeds per point, mean of the best 5.
"""

from tf_sgd_regimes.configs import common


def _base():
    config = common.base_config()
    config.data = dict(name="ptb", data_dir=None, download=False, split="test",
                       vocab_size=10_000, unroll=35)
    config.model = dict(name="lstm_lm", embedding_size=650, units=650, num_layers=2,
                        dropout_rate=0.5, init_scale=0.05)
    config.l2 = 0.0  # Zaremba et al. use dropout, no L2
    config.l2_scope = "kernels"
    # Per member, on the global norm of the gradient of the per-window objective (token
    # cross-entropy summed over the 35 steps, averaged over the batch: Zaremba et al.'s
    # scale, on which their clip at 5 and the paper's rates are set; tasks.py).
    config.train.clip_grad_norm = 5.0
    # The training objective is per window of 35 tokens; per token it starts at
    # ln(10,000) = 9.2, so the bound is 50 per token.
    config.train.divergence_loss = 50.0 * 35
    # 64 evaluation streams of ~1,290 consecutive test targets each, together every target
    # of the split once (data.token_windows.eval_windows); the carried state matters as in a
    # single-stream pass (Zaremba et al. evaluate with one: eval_batch_size=1) at a
    # fraction of the time, at the price of 63 more cold starts.
    config.train.eval_batch_size = 64
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.seeds = tuple(range(7))
    config.sweep.pack_size = 7  # one learning rate's seeds
    config.analysis.best_k = 5
    config.analysis.num_seeds = 7
    config.analysis.selection_metric = "test_perplexity"
    config.analysis.selection_mode = "min"
    config.analysis.train_metric = "train_perplexity"
    return config


def ptb_lstm_epoch_budget():
    """Figure 7: 40 epochs, SGD and Momentum, B 4..512."""
    config = _base()
    config.description = "LSTM PTB, 40 epochs, SGD vs Momentum (fig 7)"
    config.cost = "~16 hours on a TPU v3-8 (estimate)"
    config.budget.kind = "epochs"
    config.budget.epochs = 40.0
    config.sweep.batch_sizes = tuple(2**i for i in range(2, 10))  # 4 .. 512
    # Optimum ~ sqrt(B) at small B (2.8 at 64) and flat above 128.
    config.sweep.effective_lrs = common.powers_of_two(-3, 4, 0.5)
    return config


def ptb_lstm_step_budget():
    """Table 6: 16,560 steps, Momentum, B 16..256."""
    config = _base()
    config.description = "LSTM PTB, 16,560 steps, Momentum (table 6)"
    config.cost = "~6 hours on a TPU v3-8 (estimate)"
    config.budget.kind = "steps"
    config.budget.steps = 16_560  # 40 epochs at B = 64
    config.sweep.optimizers = ("momentum",)
    config.sweep.batch_sizes = (16, 32, 64, 128, 256)
    config.sweep.effective_lrs = common.powers_of_two(-1, 4, 0.5)  # table 6: 2^0.5 .. 2^2.5
    config.analysis.paper_reference = "table6"
    return config


def ptb_lstm_variable_epoch_budget():
    """Figure 9: B = 64, Momentum, epoch budgets 3.5 .. 448."""
    config = _base()
    config.description = "LSTM PTB, B=64, Momentum, epoch budgets 3.5..448 (fig 9)"
    config.cost = "~20 hours on a TPU v3-8 (estimate)"
    config.budget.kind = "epochs"
    config.budget.epochs = 40.0  # unused: every cell takes its budget from the sweep
    config.sweep.optimizers = ("momentum",)
    config.sweep.batch_sizes = (64,)
    # Two orders of magnitude around Zaremba et al.'s 39 epochs; the figure's test
    # perplexity turns up beyond 56 epochs.
    config.sweep.epoch_budgets = tuple(3.5 * 2**k for k in range(8))
    config.sweep.effective_lrs = common.powers_of_two(-2, 4, 0.5)
    return config


def _card(variant: str) -> list:
    """The fidelity card of one variant (reference/fidelity.py)."""
    from tf_sgd_regimes.reference import fidelity as fc

    F = fc.Fact
    zaremba = "Zaremba et al. 2014"
    facts = [
        F("model", "lstm_lm", fc.APPENDIX, field="model.name",
          quote="following the implementation described in Zaremba et al. (2014)"),
        F("widths", 2, fc.APPENDIX, field="model.num_layers",
          quote="The LSTM model used has two layers with 650 units per layer."),
        F("widths", 650, fc.APPENDIX, field="model.units",
          quote="The LSTM model used has two layers with 650 units per layer."),
        F("widths", 650, zaremba + " (medium model: embedding = hidden size)",
          field="model.embedding_size"),
        F("widths", 10_000, zaremba + " (Mikolov's 10k-word vocabulary)",
          field="data.vocab_size"),
        F("init range", 0.05, fc.APPENDIX, field="model.init_scale",
          quote="The parameters are initialized uniformly in $[-0.05, 0.05]$"),
        F("gradient clip", 5.0, fc.APPENDIX, field="train.clip_grad_norm",
          quote="We apply gradient clipping at 5"),
        F("dropout", 0.5, fc.APPENDIX, field="model.dropout_rate",
          quote="dropout with probability 0.5 on the non-recurrent connections"),
        F("unroll", 35, fc.APPENDIX, field="data.unroll",
          quote="We train the LSTM using an unroll step of 35"),
        F("training loss", "token cross-entropy summed over the 35 steps, batch mean",
          zaremba + ", main.lua (its clip at 5 and lr 1 are on this scale)"),
        F("normalisation", None, fc.NOT_APPLICABLE),
        F("ghost batch size", None, fc.NOT_APPLICABLE),
        F("augmentation", None, fc.NOT_APPLICABLE),
        F("L2", 0.0, zaremba + " (dropout, no weight decay)", field="l2"),
        F("L2 scope", None, fc.NOT_APPLICABLE),
        F("LR grid spacing", 2.0**0.5, fc.MAIN_TEXT, field="derived.lr_ratio",
          note="powers of sqrt(2); table 6 prints 1.4, 2.0, 2.8, 5.6"),
        F("LR grid bounds", None, fc.OUR_CHOICE, note="wide enough that every optimum is "
                                                      "interior"),
        F("selection split", "test", fc.APPENDIX, field="data.split",
          quote="minimizes the test set perplexity"),
        F("selection split", 64, fc.OUR_CHOICE, field="train.eval_batch_size",
          note="64 evaluation streams covering every target; Zaremba et al. use one"),
        F("selection metric", "test_perplexity", fc.APPENDIX,
          field="analysis.selection_metric", quote="minimizes the test set perplexity"),
    ] + common.schedule_facts()
    best_fig = "report the mean performance of the best 5 of 7 runs"
    best_table = "the best 5 out of 7 training runs"
    facts += {
        "ptb_lstm_epoch_budget": [
            F("budget", 40.0, fc.APPENDIX, quote="trained on PTB for 40 epochs",
              field="budget.epochs"),
            F("batch sizes", tuple(2**i for i in range(2, 10)), fc.OUR_CHOICE,
              field="sweep.batch_sizes", note="figure 7's range is not printed"),
            *fc.best_k_of_n(5, 7, fc.APPENDIX, quote=best_fig)],
        "ptb_lstm_step_budget": [
            F("budget", 16_560, fc.APPENDIX, quote="for 16560 updates",
              field="budget.steps"),
            F("batch sizes", (16, 32, 64, 128, 256), "appendix (table 6 rows)",
              field="sweep.batch_sizes"),
            *fc.best_k_of_n(5, 7, fc.APPENDIX, quote=best_table)],
        "ptb_lstm_variable_epoch_budget": [
            F("budget", tuple(3.5 * 2**k for k in range(8)), fc.OUR_CHOICE,
              field="sweep.epoch_budgets", note="two orders of magnitude around 40"),
            F("batch sizes", (64,), fc.APPENDIX, field="sweep.batch_sizes",
              quote="a batch size of 64 at a range of epoch budgets"),
            *fc.best_k_of_n(5, 7, fc.APPENDIX, quote="best 5 out of 7 runs")],
    }[variant]
    return facts


_VARIANTS = {
    "ptb_lstm_epoch_budget": ptb_lstm_epoch_budget,
    "ptb_lstm_step_budget": ptb_lstm_step_budget,
    "ptb_lstm_variable_epoch_budget": ptb_lstm_variable_epoch_budget,
}


def get_config(variant: str = "ptb_lstm_step_budget"):
    return common.variant_config(_VARIANTS, variant)


CARDS = {variant: _card(variant) for variant in _VARIANTS}

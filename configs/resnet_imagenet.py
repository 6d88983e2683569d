"""ResNet-50 (Goyal et al. 2017 variant) on ImageNet, 90 epochs: the paper's table 2.

    python -m tf_sgd_regimes.run --experiment=resnet50_imagenet_epoch_budget \
        --workdir=gs://BUCKET/runs/table2 --config.data.data_dir=gs://BUCKET/tfds

Expected cost (ESTIMATE, not a measurement: 8.2 GFLOPs per 224x224 image forward
(tf.profiler) x 3 for training x 90 epochs x 1,281,167 images x 54 cells = 1.5e20 FLOPs):
~12 days on a TPU v3-8 at 35% of its 420 TFLOP/s; ~100 years on 2 CPU cores at the
47 GFLOP/s tools/benchmark_models.py measured for ResNet-50.
ImageNet must be prepared first (tfds "imagenet2012" needs a manual download; the error
message says how). 2 optimizers x 3 batch sizes x 9 effective learning rates x 1 seed = 54
cells; the table's grid is 1..16, so 2^-2..2^6 keeps every optimum inside.

Data is streamed with tf.data (tf_sgd_regimes.samplers), one input pipeline per packed
member; the paper trains one model per (batch size, learning rate), so a pack holds one.
"""

from tf_sgd_regimes.configs import common


def get_config():
    config = common.base_config()
    config.name = "resnet50_imagenet_epoch_budget"
    config.description = "ResNet-50 ImageNet, 90 epochs, SGD vs Momentum, 1 seed (table 2)"
    config.cost = "~12 days on a TPU v3-8 (estimate)"
    config.data = dict(name="imagenet", data_dir=None, download=False, manual_dir=None,
                       validation_fraction=0.0, image_size=224)
    # Goyal et al. (2017) compute batch-norm statistics over n = 32 images per worker,
    # whatever the total batch: ghost batches of 32 do the same on any slice.
    config.model = dict(name="resnet50", ghost_batch_size=32, zero_init_last_gamma=True)
    # Goyal et al.'s weight decay, on conv/dense kernels only (no decay on BN parameters).
    config.l2 = 1e-4
    config.l2_scope = "kernels"
    config.budget.kind = "epochs"
    config.budget.epochs = 90.0
    config.schedule.warmup_steps = 0  # the paper drops Goyal et al.'s warmup
    config.sweep.optimizers = ("sgd", "momentum")
    config.sweep.batch_sizes = (256, 1024, 4096)
    config.sweep.effective_lrs = common.powers_of_two(-2, 6)
    config.sweep.seeds = (0,)
    config.sweep.pack_size = 1
    config.train.eval_batch_size = 1000  # 50 batches over the 50,000 validation images
    config.train.steps_per_call = 100
    config.train.divergence_loss = 100.0  # cross-entropy starts at ln(1000) = 6.9
    config.analysis.best_k = 1
    config.analysis.num_seeds = 1
    config.analysis.paper_reference = "table2"
    return config


def _card() -> list:
    """The fidelity card (reference/fidelity.py)."""
    from tf_sgd_regimes.reference import fidelity as fc

    F = fc.Fact
    goyal = "Goyal et al. 2017"
    return [
        F("model", "resnet50", fc.APPENDIX, field="model.name",
          quote="We follow the modified ResNet-50 implementation of Goyal et al. (2017)"),
        F("widths", "stages (3, 4, 6, 3), bottlenecks 64..512", goyal),
        F("normalisation", True, goyal, field="model.zero_init_last_gamma",
          note="batch norm; the last gamma of each residual block starts at 0"),
        F("ghost batch size", 32, goyal + " (batch-norm statistics over n = 32 per worker)",
          field="model.ghost_batch_size"),
        F("L2", 1e-4, goyal, field="l2"),
        F("L2 scope", "kernels", goyal + " (no weight decay on the BN gamma and beta)",
          field="l2_scope"),
        F("dropout", None, fc.NOT_APPLICABLE),
        F("gradient clip", 0.0, goyal, field="train.clip_grad_norm"),
        F("unroll", None, fc.NOT_APPLICABLE),
        F("init range", "He-normal convolutions, N(0, 0.01) classifier", goyal),
        F("augmentation", 224, goyal + " (random-size crop to 224, horizontal flip)",
          field="data.image_size"),
        F("budget", 90.0, fc.APPENDIX, quote="ResNet-50, trained on ImageNet for 90 epochs",
          field="budget.epochs"),
        F("batch sizes", (256, 1024, 4096), "appendix (table 2 rows)",
          field="sweep.batch_sizes"),
        F("LR grid spacing", 2.0, "appendix (table 2 prints 1, 4, 8, 16)",
          field="derived.lr_ratio"),
        F("LR grid bounds", None, fc.OUR_CHOICE, note="2^-2 .. 2^6 around table 2's 1 .. 16"),
        F("seeds", 1, fc.APPENDIX, field="derived.num_seeds",
          quote="we train a single model for each batch size/learning rate pair"),
        F("best k", 1, fc.APPENDIX, field="analysis.best_k",
          quote="we train a single model for each batch size/learning rate pair"),
        F("selection split", "test", fc.MAIN_TEXT, field="analysis.split",
          note="ImageNet's validation set serves as the test set, as is customary"),
        F("selection metric", "test_accuracy", fc.MAIN_TEXT,
          field="analysis.selection_metric"),
        F("training loss", "softmax cross-entropy + 0.5 * l2 * |w|^2", goyal),
    ] + common.schedule_facts(warmup_quote="without learning rate warmup")


CARDS = {"resnet50_imagenet_epoch_budget": _card()}

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

Data is streamed with tf.data (tf_sgd_regimes.streaming), one input pipeline per packed
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
    config.model = dict(name="resnet50", ghost_batch_size=64, zero_init_last_gamma=True)
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

"""tf.distribute strategies by name: auto, cpu, mirrored, multi_worker, tpu."""

import tensorflow as tf

STRATEGIES = ("auto", "cpu", "default", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "auto", tpu_address: str = "") -> tf.distribute.Strategy:
    """Returns the strategy every trial of a sweep runs under.

    auto: a TPU if one is attached (Colab / Cloud TPU VM), else MirroredStrategy over
      all GPUs if there are several, else the default strategy (one device).
    cpu / default: the default strategy on the first device.
    mirrored: MirroredStrategy over all local GPUs (or logical CPU devices in tests).
    multi_worker: MultiWorkerMirroredStrategy; TF_CONFIG says who the workers are.
    tpu: TPUStrategy; tpu_address is "" for a TPU VM / Colab, or a grpc:// address.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (config.strategy); known: {STRATEGIES}")
    if name == "tpu" or (name == "auto" and _tpu_available(tpu_address)):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_available(tpu_address: str) -> bool:
    if tf.config.list_logical_devices("TPU"):
        return True
    try:
        tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    except (ValueError, KeyError, RuntimeError):
        return False
    return True


def num_replicas(strategy: tf.distribute.Strategy) -> int:
    return int(strategy.num_replicas_in_sync)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.TPUStrategy,))

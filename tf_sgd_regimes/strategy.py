"""tf.distribute strategies by name: auto, cpu, mirrored, multi_worker, tpu.

One process may run many sweeps (a notebook), so a strategy is made once per process and
handed out again: every new MirroredStrategy numbers its collectives from the same start,
and two of them over the same devices then reuse each other's collective instance keys
(the second sweep's all-reduces fail with "Shape mismatch in the collective instance"),
and a TPU system initialised again loses what lives on it. Strategies with different
devices in one process (tests) come from `mirrored(devices)`, which gives each its own
range of collective keys.
"""

import itertools
from typing import Optional, Sequence

import tensorflow as tf

STRATEGIES = ("auto", "cpu", "default", "mirrored", "multi_worker", "tpu")
_MADE = {}  # (name, tpu_address) -> strategy, one per process
# Group keys of each MirroredStrategy made here start at a distinct base (TF gives every
# new one the same base, 0, so two over different devices would join one group).
_KEY_BASES = itertools.count(start=1000, step=1000)


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
    key = (name, tpu_address)
    if key not in _MADE:
        _MADE[key] = _make(name, tpu_address)
    return _MADE[key]


def _make(name: str, tpu_address: str) -> tf.distribute.Strategy:
    if name == "tpu" or (name == "auto" and _tpu_available(tpu_address)):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return mirrored()
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return mirrored()
    return tf.distribute.get_strategy()


def mirrored(devices: Optional[Sequence[str]] = None) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy (all local GPUs, else the CPU devices; or `devices`) whose
    collective keys do not collide with those of any other strategy made here."""
    if devices is None and not tf.config.list_logical_devices("GPU"):
        # TF's default is one CPU device; logical CPU devices (tests) are replicas too.
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    keyed = type("MirroredStrategy", (tf.distribute.MirroredStrategy,),
                 {"_collective_key_base": next(_KEY_BASES)})
    return keyed(devices)


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

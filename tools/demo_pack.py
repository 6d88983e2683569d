"""The demo's pack (78 MLP members of the default experiment) set up for one chunk, for the
tools that look inside a packed step (count_step_kernels.py, profile_step.py)."""

import tensorflow as tf

from tf_sgd_regimes import cpu_threads
from tf_sgd_regimes import data
from tf_sgd_regimes import engine
from tf_sgd_regimes import experiments

MEMBERS = 78  # the default experiment's pack: 13 learning rates x 3 seeds x 2 optimizers


def demo_pack(jit: bool, batch_size: int, steps: int, learning_rate: float,
              total_steps: int):
    """(runner, indices): a reset runner of the demo pack, and one chunk's batch indices.

    The noise probe is off and a chunk is `steps` steps; half the members use momentum 0.9.
    """
    config = experiments.get_config(experiments.DEFAULT_EXPERIMENT)
    config = experiments.apply_overrides(config, [
        "train.noise_scale.enabled=false", f"train.steps_per_call={steps}",
        f"train.jit_compile={'true' if jit else 'false'}"])
    cpu_threads.apply(config)  # the demo's thread setting, as a sweep applies it
    dataset = data.get_dataset(**dict(config.data))
    trainer = engine.Engine(config, dataset, tf.distribute.get_strategy())
    members = [engine.Member(f"m{k}", learning_rate, 0.9 if k % 2 else 0.0, k % 3)
               for k in range(MEMBERS)]
    trainer._batch_size = batch_size
    runner = trainer._runner(len(members), batch_size)
    runner.reset(members, total_steps)
    indices = trainer.sampler.host_indices([m.seed for m in members], 0, steps, batch_size,
                                           steps)
    return runner, indices

"""The streamed (tf.data) ImageNet path under MirroredStrategy: every replica reads its own
share through `distribute_datasets_from_function`, and together they see the batches one
device sees (tfds.testing.mock_data stands in for ImageNet)."""

import json
import textwrap

import numpy as np

from conftest import run_python

_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tensorflow_datasets as tfds
    sys.path.insert(0, "tests")
    from test_paper_experiments import MOCK_EXAMPLES, _streamed_config
    from tf_sgd_regimes import data, samplers, strategy as strategy_lib

    SEEDS, BATCH, STEPS = (3, 4), 4, 3
    out = {}
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        dataset = data.get_dataset("imagenet", data_dir=tempfile.mkdtemp(), image_size=16)
        for replicas in (1, 2):
            strategy = (tf.distribute.get_strategy() if replicas == 1
                        else strategy_lib.mirrored(["/cpu:0", "/cpu:1"]))
            sampler = samplers.StreamedSampler(dataset, strategy, _streamed_config())

            @tf.function
            def steps(batch_size):
                batches = []
                for i in range(STEPS):
                    fetched = sampler.fetch()
                    def replica_fn(fetched):
                        context = tf.distribute.get_replica_context()
                        return sampler.train_batch(None, i, batch_size,
                                                   context.replica_id_in_sync_group,
                                                   context.num_replicas_in_sync,
                                                   tf.constant(0, tf.int64), None, fetched)
                    x, y = strategy.run(replica_fn, args=(fetched,))
                    # Replica r holds examples [r B/R, (r + 1) B/R) of every member's batch.
                    batches.append((strategy.gather(x, axis=1), strategy.gather(y, axis=1)))
                return batches

            sampler.host_indices(SEEDS, 0, STEPS, BATCH, STEPS)
            out[str(replicas)] = [(x.numpy().tolist(), y.numpy().tolist())
                                  for x, y in steps(tf.constant(BATCH))]
    print("RESULT" + json.dumps(out))
    # The interpreter's exit can hang here (distributed tf.data iterators under a
    # MirroredStrategy on CPU, seen after the result was printed): leave at once.
    sys.stdout.flush()
    os._exit(0)
""")


def test_streamed_batches_under_two_replicas_are_those_of_one_device():
    done = run_python(_SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    assert len(out["1"]) == len(out["2"]) == 3
    for (x1, y1), (x2, y2) in zip(out["1"], out["2"]):
        x1, x2 = np.array(x1), np.array(x2)
        assert x1.shape == x2.shape == (2, 4, 16, 16, 3)  # [members, global batch, ...]
        np.testing.assert_allclose(x2, x1, atol=1e-6)
        np.testing.assert_array_equal(np.array(y2), np.array(y1))
    # The members' streams differ (each its own seed), so the comparison is not vacuous.
    assert not np.allclose(np.array(out["1"][0][0][0]), np.array(out["1"][0][0][1]))

"""XLA compile seconds of a packed step on 1 device vs on 2 logical CPU replicas, per part.

    PYTHONPATH=. python tools/xla_replica_compile.py                  # the convnets
    PYTHONPATH=. python tools/xla_replica_compile.py --families=resnet50 --steps_per_call=4

For each family's tiny configuration (tests/test_engine_xla.py), a pack of 2 members at
B = 8 trains `--steps` steps twice (the second pack must compile nothing), with
jit_compile=True on one device (the whole chunk is one XLA program) and under
MirroredStrategy on 2 logical CPU devices (each replica compiles its gradient, update and
evaluation parts; engine._PackRunner.split_xla). Each run is its own process; TF's
compilation profiler logs every XLA compilation ("Compiled <function> N times, compile
time: T us"), which this script sums per part. BENCHMARKS.md, "Replica-count
independence", has the figures.
"""

import argparse
import os
import re
import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent("""
    import sys, time
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    from test_engine_xla import tiny_pack_config, tiny_pack_dataset
    from tf_sgd_regimes import engine as engine_lib, strategy as strategy_lib
    name, replicas, steps_per_call, steps = %r, %d, %d, %d
    strategy = (strategy_lib.mirrored(["/cpu:0", "/cpu:1"]) if replicas == 2
                else tf.distribute.get_strategy())
    config = tiny_pack_config(name, True, steps_per_call=steps_per_call, eval_batch_size=4)
    if name in ("wide_resnet", "resnet50"):  # groups of 4: on one replica each
        config.model = dict(config.model, ghost_batch_size=4)
    members = [engine_lib.Member("a", 0.05, 0.9, 0), engine_lib.Member("b", 0.02, 0.0, 1)]
    trainer = engine_lib.Engine(config, tiny_pack_dataset(name, 8), strategy)
    for pack in range(2):
        start = time.perf_counter()
        trainer.train_pack(members, 8, steps)
        print(f"PACK {pack} {time.perf_counter() - start:.2f}", flush=True)
""")

_COMPILED = re.compile(r"Compiled __inference_(_\w+?)_\d+ (\d+) times, compile time: (\d+) us")


def measure(name: str, replicas: int, steps_per_call: int, steps: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               TF_CPP_VMODULE="device_compilation_profiler=1")
    done = subprocess.run([sys.executable, "-c",
                           _CHILD % (name, replicas, steps_per_call, steps)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    parts = {}  # part -> [compilations (all replicas), seconds]
    for part, _, micros in _COMPILED.findall(done.stderr):
        part = part.strip("_").replace("replica_", "").replace("_impl", "")
        entry = parts.setdefault(part, [0, 0.0])
        entry[0] += 1
        entry[1] += int(micros) * 1e-6
    packs = [float(x.split()[2]) for x in done.stdout.splitlines() if x.startswith("PACK")]
    return {"parts": parts, "packs": packs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="small_cnn,small_wrn,wide_resnet,resnet50")
    parser.add_argument("--steps_per_call", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    print("| family | replicas | part: compilations (all replicas), compile s summed "
          "| first pack s | second pack s |")
    print("|---|---|---|---|---|")
    for name in args.families.split(","):
        for replicas in (1, 2):
            got = measure(name, replicas, args.steps_per_call, args.steps)
            parts = "; ".join(f"{part}: {n}, {s:.1f}" for part, (n, s) in
                              sorted(got["parts"].items()))
            print(f"| {name} | {replicas} | {parts} | {got['packs'][0]:.1f} | "
                  f"{got['packs'][1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()

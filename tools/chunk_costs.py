"""Where a sweep's packs spend their time, per batch size, from the engine's own timing.

    python tools/chunk_costs.py --workdir=/tmp/chunk_costs                  # the demo
    python tools/chunk_costs.py --workdir=/tmp/chunk_costs train.jit_compile=False

Runs the experiment's sweep in this process (config overrides as extra arguments) and
prints, per pack: its batch size and steps, its chunks (and how many traced, i.e.
reported no ChunkReport.compute_s), the measured compute per step, the rest of its
training time (set-up, traces, probe, evaluation) and its records' time. The per-B
compute rates are what engine.XLA_AUTO_SPEEDUP was read from (BENCHMARKS.md, "The
demo's ETA against the truth").
"""

import argparse
import shutil
import time

from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments
from tf_sgd_regimes.sweep import loop
from tf_sgd_regimes.sweep import progress as progress_lib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/chunk_costs")
    parser.add_argument("--experiment", default=experiments.DEFAULT_EXPERIMENT)
    args, overrides = parser.parse_known_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    packs = []
    train_pack = engine_lib.Engine.train_pack
    training_done = progress_lib.Progress.training_done
    end_pack = progress_lib.Progress.end_pack

    def timed_train(self, members, batch_size, total_steps, on_chunk=None, **kwargs):
        pack = {"B": batch_size, "steps": total_steps, "start": time.perf_counter(),
                "chunks": []}
        packs.append(pack)

        def report(chunk):
            pack["chunks"].append((chunk.step, chunk.compute_s))
            if on_chunk is not None:
                on_chunk(chunk)

        return train_pack(self, members, batch_size, total_steps, report, **kwargs)

    def timed_done(self):
        if packs and "trained" not in packs[-1]:
            packs[-1]["trained"] = time.perf_counter()
        return training_done(self)

    def timed_end(self, *a, **k):
        if packs:
            packs[-1]["end"] = time.perf_counter()
        return end_pack(self, *a, **k)

    engine_lib.Engine.train_pack = timed_train
    progress_lib.Progress.training_done = timed_done
    progress_lib.Progress.end_pack = timed_end
    config = experiments.apply_overrides(experiments.get_config(args.experiment),
                                         tuple(overrides))
    from tf_sgd_regimes import cpu_threads

    cpu_threads.apply(config)  # as a sweep started by tf_sgd_regimes.run does
    loop.Sweep(config, args.workdir, progress_interval_s=1e9).run()
    print("| B | steps | chunks (traced) | compute ms/step | rest of training s | records s |")
    print("|---|---|---|---|---|---|")
    for pack in packs:
        compute, timed, previous = 0.0, 0, 0
        for step, seconds in pack["chunks"]:
            if seconds is not None:
                compute += seconds
                timed += step - previous
            previous = step
        per_step = compute / timed if timed else float("nan")
        rest = pack["trained"] - pack["start"] - per_step * pack["steps"]
        traced = sum(1 for _, seconds in pack["chunks"] if seconds is None)
        print(f"| {pack['B']} | {pack['steps']} | {len(pack['chunks'])} ({traced}) | "
              f"{1000 * per_step:.3f} | {rest:.2f} | {pack['end'] - pack['trained']:.2f} |")


if __name__ == "__main__":
    main()

"""The progress lines' ETA against the true time left, from a sweep's log.

    python tools/eta_check.py --run --workdir=/tmp/eta_demo --log=/tmp/eta_demo.log
    python tools/eta_check.py --log=/tmp/eta_demo.log          # an existing log
    python tools/eta_check.py --run --log=/tmp/nqm.log --experiment=nqm_epoch_budget \
        --config.sweep.seeds="(0,1,2)"                       # other flags go to the run
    python tools/eta_check.py --run --log=/tmp/eta.log --events=/tmp/eta.jsonl  # and record

--run starts `python -m tf_sgd_regimes.run --no_report` (the embedded default experiment
unless --experiment) and stamps every output line with the wall clock as it arrives, so
the truth is not limited to the printed one-second resolution; a log without stamps
falls back to the printed "elapsed". The truth at a line is the sweep's end (its last
progress line) minus the line's time. Prints one row per line from --from_work of the
work on, and the worst relative error over the lines with at least --min_left_s left
(a second's rounding is a large share of the last seconds).

--floor then runs a fixed workload (the same small matrix product and JSON round trip,
over and over) for as long as the sweep took, and prices its time left at the lines'
fractions of work exactly as an ETA with a perfect cost model would: units left times
the mean unit so far. What that misses is the machine's own change of speed over the
span, which no ETA can foresee; it is printed beside the sweep's worst, from the same
minutes, so the two compare side by side. --machine_s=120 runs only that workload, for
120 s, and tables how often such an ETA misses 20% in sweeps of 6-60 s cut from it.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"cells (\d+)/(\d+) .*?([\d.]+)% of work\s+elapsed ([\d:]+)\s+ETA ([\d:.?]+)")


def seconds(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    return float(sum(p * 60 ** i for i, p in enumerate(reversed(parts))))


def run(workdir: str, log: str, experiment: str = "", extra=(), events: str = "") -> None:
    if events:  # the same run, through eta_replay's recorder (it adds --no_report)
        start = [sys.executable, os.path.join(REPO, "tools", "eta_replay.py"),
                 f"--record={events}", f"--workdir={workdir}"]
    else:
        start = [sys.executable, "-m", "tf_sgd_regimes.run", f"--workdir={workdir}",
                 "--no_report"]
    command = start + ([f"--experiment={experiment}"] if experiment else []) + list(extra)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    with open(log, "w") as out:
        out.write(f"# {' '.join(command)}\n# load average before: {os.getloadavg()}\n")
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(f"@{time.time():.3f} {line}")
            out.flush()
        out.write(f"# exit {proc.wait()}; load average after: {os.getloadavg()}\n")


def rows(log: str):
    """(fraction of work, line time, ETA printed) of every progress line."""
    found = []
    with open(log) as f:
        for line in f:
            stamp = None
            if line.startswith("@"):
                stamp, _, line = line.partition(" ")
                stamp = float(stamp[1:])
            m = LINE.search(line)
            if m and m.group(5) != "?":
                elapsed = seconds(m.group(4))
                found.append((float(m.group(3)) / 100.0,
                              stamp if stamp is not None else elapsed, seconds(m.group(5))))
    return found


def exact_model_worst(unit_ends, fractions, min_left_s: float, rate="so_far") -> float:
    """Worst relative error of a perfect cost model's ETA over a run of equal units.

    Args:
      unit_ends: seconds from the run's start at which each unit ended (increasing).
      fractions: the fractions of the work at which the ETA is read (the sweep's lines).
      min_left_s: lines with less time left are not counted (as for the sweep).
      rate: seconds per unit the ETA prices the rest at: "so_far" (the mean of the units
        done), "latest_half" (of the latest half of them), or a number known beforehand.

    At fraction f, k = ceil(f n) units are done: the ETA is (n - k) times the rate, the
    truth the time the last n - k took. Only the speed's change counts.
    """
    n = len(unit_ends)
    worst = 0.0
    for f in fractions:
        k = min(max(int(math.ceil(f * n)), 1), n)
        left = unit_ends[-1] - unit_ends[k - 1]
        if left < min_left_s or left <= 0:
            continue
        if rate == "so_far":
            per_unit = unit_ends[k - 1] / k
        elif rate == "latest_half":
            half = k // 2
            per_unit = (unit_ends[k - 1] - (unit_ends[half - 1] if half else 0.0)) / (k - half)
        else:
            per_unit = float(rate)
        worst = max(worst, abs((n - k) * per_unit - left) / left)
    return worst


def simulated_sweeps(unit_ends, length_s: float, min_left_s: float, rate="so_far"):
    """The worst errors (exact_model_worst, read at every half percent of the work from
    10% on) of sweeps of about `length_s` cut from one long run of equal units, each
    starting a tenth of a sweep after the last; [] if the run is too short for two."""
    times = [b - a for a, b in zip([0.0] + list(unit_ends[:-1]), unit_ends)]
    units = int(length_s / sorted(times)[len(times) // 2])
    if units < 10 or 2 * units > len(times):
        return []
    fractions = [0.1 + i / 200 for i in range(181)]
    worst = []
    for start in range(0, len(times) - units + 1, max(units // 10, 1)):
        base = unit_ends[start - 1] if start else 0.0
        window = [e - base for e in unit_ends[start:start + units]]
        worst.append(exact_model_worst(window, fractions, min_left_s, rate))
    return worst


def machine_table(unit_ends, min_left_s: float, lengths=(6, 10, 15, 30, 60)) -> str:
    """A markdown table of simulated_sweeps' share over 20%, by sweep length and rate."""
    mean = unit_ends[-1] / len(unit_ends)
    lines = ["| simulated sweep | sweeps | worst error, median (mean so far) | over 20%: "
             "mean so far | latest half | the whole run's mean (hindsight) |",
             "|---|---|---|---|---|---|"]
    for length in lengths:
        cells = [simulated_sweeps(unit_ends, length, min_left_s, rate)
                 for rate in ("so_far", "latest_half", mean)]
        if not cells[0]:
            continue
        share = [f"{100 * sum(w > 0.2 for w in c) / len(c):.0f}%" for c in cells]
        median = sorted(cells[0])[len(cells[0]) // 2]
        lines.append(f"| {length} s | {len(cells[0])} | {100 * median:.0f}% | "
                     + " | ".join(share) + " |")
    return "\n".join(lines)


def fixed_workload(seconds: float, clock=time.perf_counter):
    """Runs equal units of work (a 200 x 200 matrix product, a JSON round trip of 300
    entries: compute and bookkeeping, as a sweep's) for `seconds`; their end times."""
    import numpy as np

    a = np.random.RandomState(0).rand(200, 200)
    table = {str(i): [i, i * 0.5, "cell"] for i in range(300)}
    def unit():
        for _ in range(20):
            json.loads(json.dumps(table))
            a @ a

    unit()  # warm: the first products and allocations are slower
    start, ends = clock(), []
    while not ends or ends[-1] < seconds:
        unit()
        ends.append(clock() - start)
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="")
    parser.add_argument("--run", action="store_true", help="run the sweep first")
    parser.add_argument("--workdir", default="/tmp/eta_check")
    parser.add_argument("--experiment", default="")
    parser.add_argument("--from_work", type=float, default=0.1)
    parser.add_argument("--min_left_s", type=float, default=3.0)
    parser.add_argument("--machine_s", type=float, default=0.0,
                        help="no sweep: run the fixed workload this long and table how "
                             "often a perfect cost model would miss 20%% in sweeps of "
                             "6-60 s cut from it")
    parser.add_argument("--floor", action="store_true",
                        help="then run a fixed workload for as long as the sweep took and "
                             "print a perfect cost model's worst error over it")
    parser.add_argument("--events", default="",
                        help="with --run: also record the run's progress events here "
                             "(tools/eta_replay.py --record), to replay it")
    args, extra = parser.parse_known_args()
    if args.machine_s > 0:
        ends = fixed_workload(args.machine_s)
        print(f"{len(ends)} units over {ends[-1]:.0f} s")
        print(machine_table(ends, args.min_left_s))
        return
    if not args.log:
        parser.error("--log is required (the sweep's log to read or to write), "
                     "unless --machine_s")
    if args.events and not args.run:
        parser.error("--events records the run that --run starts: give --run too, or "
                     "replay an existing recording with tools/eta_replay.py --replay")
    if args.events and not os.path.isdir(os.path.dirname(os.path.abspath(args.events))):
        parser.error(f"--events={args.events}: its directory does not exist; create it or "
                     "give another path")
    if args.run:
        import shutil

        shutil.rmtree(args.workdir, ignore_errors=True)
        run(args.workdir, args.log, args.experiment, extra, args.events)
    found = rows(args.log)
    if not found:
        sys.exit(f"no progress lines in {args.log}")
    end = found[-1][1]
    print("| work done | ETA printed (s) | time left, true (s) | error |")
    print("|---|---|---|---|")
    worst = 0.0
    for fraction, at, eta in found:
        truth = end - at
        if fraction < args.from_work or truth <= 0:
            continue
        error = (eta - truth) / truth
        if truth >= args.min_left_s:
            worst = max(worst, abs(error))
        print(f"| {100 * fraction:.1f}% | {eta:g} | {truth:.1f} | {100 * error:+.0f}% |")
    print(f"worst error with >= {args.min_left_s:g} s left: {100 * worst:.0f}%")
    if args.floor:
        fractions = [f for f, _, _ in found if f >= args.from_work]
        ends = fixed_workload(end - found[0][1] if len(found) > 1 else 1.0)
        floor = exact_model_worst(ends, fractions, args.min_left_s)
        print(f"machine floor, a fixed workload over {ends[-1]:.0f} s with a perfect cost "
              f"model, worst error with >= {args.min_left_s:g} s left: {100 * floor:.0f}%")


if __name__ == "__main__":
    main()

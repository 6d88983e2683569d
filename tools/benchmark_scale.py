"""Sweeps at scale with the NQM engine (training is free, so what is timed is bookkeeping).

    python tools/benchmark_scale.py --mode=sizes --sizes=1000,10000,100000
    python tools/benchmark_scale.py --mode=issue            # 13,530 cells through the CLI
    python tools/benchmark_scale.py --mode=workers --cells=10000 --workers=8
    python tools/benchmark_scale.py --mode=kill_loop --cells=4000 --kills=10
    python tools/benchmark_scale.py --mode=tensorboard --logdir=DIR/tensorboard
    python tools/benchmark_scale.py --mode=layouts --rounds=2

sizes: one process per size runs `nqm_epoch_budget` with as many learning rates and seeds
  as make the size (2 optimizers x 11 batch sizes x L rates x S seeds) through sweep.Sweep;
  reports seconds per cell (all, first 10% and last 10% of the cells), bookkeeping per cell
  (wall time minus the engine's training time), the oracle's saves, and bytes per cell
  on disk (du) and apparent (sum of file sizes).
issue: the issue's sweep, 41 learning rates x 15 seeds = 13,530 cells, as a user runs it
  (`python -m tf_sgd_regimes.run --experiment=nqm_epoch_budget ... --no_report`), timed
  from the command's start to its exit, and the work directory's size.
workers: a chief and N worker processes on localhost over keras-tuner's gRPC, one shared
  work directory; checks that every cell has exactly one record and was started once.
kill_loop: the CLI on an NQM sweep, kill -9 at random moments (after a record appears,
  or a random time after start) K times, then run to the end; checks exactly one record
  per cell and results identical to an uninterrupted in-process run.
tensorboard: starts `tensorboard --logdir` on a finished sweep and times how long until the
  HParams dashboard's own request lists every session (--cells, default: one per run
  directory) and the Time Series dashboard lists the runs; also one TensorBoard on an
  empty logdir (start-up alone).
layouts: the issue's sweep once per TensorBoard layout ("point": a run per grid point;
  "cell": a run per cell), alternated --rounds times: wall time, disk, and TensorBoard's
  load time on each logdir.

Prints one JSON line per measurement.
"""

import argparse
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BATCH_SIZES, OPTIMIZERS = 11, 2


def grid_for(cells: int):
    """(rates, seeds) with 22 x rates x seeds closest to `cells` (seeds <= 15)."""
    per = max(1, round(cells / (BATCH_SIZES * OPTIMIZERS)))
    seeds = min(15, per)
    while per % seeds and seeds > 1:
        seeds -= 1
    return per // seeds, seeds


def overrides(rates: int, seeds: int):
    lrs = ",".join(repr(2.0 ** (-5 + 10 * i / max(rates - 1, 1))) for i in range(rates))
    return [f"sweep.effective_lrs=({lrs},)", f"sweep.seeds=({','.join(map(str, range(seeds)))},)",
            f"analysis.num_seeds={seeds}", f"analysis.best_k={max(1, seeds - 1)}"]


def _du(path: str) -> int:
    """Bytes allocated on disk (du: blocks of files and directories)."""
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True)
               .stdout.split()[0]) * 1024


def _tree(path: str) -> dict:
    """Apparent bytes (sum of file sizes), files and directories under `path`."""
    if os.path.isfile(path):
        return {"apparent": os.path.getsize(path), "files": 1, "dirs": 0}
    files = dirs = apparent = 0
    for d, subdirs, names in os.walk(path):
        dirs += len(subdirs)
        files += len(names)
        apparent += sum(os.path.getsize(os.path.join(d, f)) for f in names)
    return {"apparent": apparent, "files": files, "dirs": dirs}


def disk_usage(path: str) -> dict:
    """The work directory's size on disk (du) and in data (apparent), in all and per
    top-level entry, with file and directory counts: a 4 KB block per file and per
    directory is what per-cell files cost on ext4, whatever they hold."""
    total = _tree(path)
    parts = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        parts[name] = {"du": _du(full), **_tree(full)}
    return {"du_bytes": _du(path), "apparent_bytes": total["apparent"],
            "files": total["files"], "dirs": total["dirs"], "by_entry": parts}


def nqm_config(rates: int, seeds: int):
    from tf_sgd_regimes import experiments

    return experiments.apply_overrides(experiments.get_config("nqm_epoch_budget"),
                                       overrides(rates, seeds))


def run_size(cells: int, workdir: str) -> dict:
    from tf_sgd_regimes.sweep import loop as sweep_lib

    rates, seeds = grid_for(cells)
    config = nqm_config(rates, seeds)
    shutil.rmtree(workdir, ignore_errors=True)
    sweep = sweep_lib.Sweep(config, workdir, stream=io.StringIO())
    n = len(sweep.cells)
    train = [0.0]
    engine_train = sweep.engine.train_pack

    def timed_train(*args, **kwargs):
        start = time.perf_counter()
        try:
            return engine_train(*args, **kwargs)
        finally:
            train[0] += time.perf_counter() - start

    sweep.engine.train_pack = timed_train
    ends = []  # (time, cells done) after each pack
    start = time.perf_counter()
    sweep.run(on_pack=lambda records: ends.append((time.perf_counter() - start,
                                                   len(records))))
    wall = time.perf_counter() - start
    done, times = 0, [(0.0, 0)]
    for t, k in ends:
        done += k
        times.append((t, done))

    def rate(lo, hi):  # seconds per cell between the packs that end around lo and hi
        a = min(times, key=lambda x: abs(x[1] - lo))
        b = min(times, key=lambda x: abs(x[1] - hi))
        return (b[0] - a[0]) / max(b[1] - a[1], 1)

    usage = disk_usage(workdir)
    return {"mode": "sizes", "cells": n, "rates": rates, "seeds": seeds,
            "wall_s": round(wall, 2), "s_per_cell": round(wall / n, 5),
            "bookkeeping_s_per_cell": round((wall - train[0]) / n, 5),
            "train_s": round(train[0], 2),
            "s_per_cell_first_10pct": round(rate(0, n * 0.1), 5),
            "s_per_cell_last_10pct": round(rate(n * 0.9, n), 5),
            "oracle_saves": sweep.oracle.saves,
            "du_bytes_per_cell": round(usage["du_bytes"] / n),
            "apparent_bytes_per_cell": round(usage["apparent_bytes"] / n), **usage}


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", PYTHONPATH=REPO)


def cli(workdir, rates, seeds, extra=()):
    return ([sys.executable, "-m", "tf_sgd_regimes.run", "--experiment=nqm_epoch_budget",
             f"--workdir={workdir}", "--no_report"]
            + [f"--config.{o}" for o in overrides(rates, seeds)] + list(extra))


def run_issue(workdir: str, extra=()) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run(cli(workdir, 41, 15, extra), env=env(), cwd=REPO,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith("[sweep] cells")]
    from tf_sgd_regimes.sweep import ledger

    records = len(ledger.read(workdir))
    return {"mode": "issue", "cells": records, "wall_s": round(wall, 1),
            "eta_check": eta_errors(lines), "progress_lines": lines[:2] + lines[-2:],
            **disk_usage(workdir)}


def _seconds(text: str) -> float:
    parts = [float(p) for p in text.split(":")]  # the ETA's last seconds have tenths
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def eta_errors(lines) -> dict:
    """The progress lines' ETA against the truth (the last line's elapsed time minus the
    line's), on the lines from 10% of the cells onward. Times are printed to the second."""
    import re

    rows = []
    for line in lines:
        m = re.search(r"cells (\d+)/(\d+) .*elapsed ([\d:]+)  ETA ([\d:.?]+)", line)
        if m and m.group(4) != "?":
            rows.append((int(m.group(1)) / int(m.group(2)), _seconds(m.group(3)),
                         _seconds(m.group(4))))
    end = rows[-1][1]
    checked = [(f, eta, end - t) for f, t, eta in rows if f >= 0.1 and end - t >= 5]
    worst = max((abs(eta - truth) / truth for _, eta, truth in checked), default=None)
    return {"lines_checked": len(checked), "worst_relative_error": worst,
            "samples": [(round(f, 3), eta, truth) for f, eta, truth in checked]}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(cells: int, workers: int, workdir: str) -> dict:
    rates, seeds = grid_for(cells)
    shutil.rmtree(workdir, ignore_errors=True)
    port = _free_port()
    address = ["--oracle_address=127.0.0.1:%d" % port]
    start = time.perf_counter()
    chief = subprocess.Popen(cli(workdir, rates, seeds, address + ["--role=chief",
                                                                   "--tuner_id=chief"]),
                             env=env(), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(3.0)
    procs = [subprocess.Popen(cli(workdir, rates, seeds, address + ["--role=worker",
                                                                    f"--tuner_id=tuner{i}"]),
                              env=env(), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(workers)]
    outs = [p.communicate()[0] for p in procs]
    chief_out = chief.communicate()[0]
    wall = time.perf_counter() - start
    codes = [p.returncode for p in procs] + [chief.returncode]
    from tf_sgd_regimes.sweep import grid, ledger
    from tf_sgd_regimes.theory import nqm_engine

    config = nqm_config(rates, seeds)
    expected = {c.cell_id for c in grid.all_cells(
        config, nqm_engine.NQMData(config).steps_per_epoch)}
    records = ledger.read(workdir)
    ids = [r["cell_id"] for r in records]
    by_worker = {}
    for r in records:
        worker = r["pack_id"].split("-")[0]
        by_worker[worker] = by_worker.get(worker, 0) + 1
    result = {"mode": "workers", "workers": workers, "cells": len(expected),
              "records": len(ids), "exit_codes": codes, "wall_s": round(wall, 1),
              "s_per_cell": round(wall / len(expected), 5),
              "every_cell_once": sorted(ids) == sorted(expected) and len(set(ids)) == len(ids),
              "all_first_attempt": all(r["attempt"] == 1 for r in records),
              "records_by_worker": by_worker, **disk_usage(workdir)}
    if not result["every_cell_once"] or any(codes):
        result["tail"] = (chief_out[-1500:], [o[-800:] for o in outs])
    return result


def run_kill_loop(cells: int, kills: int, workdir: str, seed: int = 0) -> dict:
    from tf_sgd_regimes.sweep import ledger
    from tf_sgd_regimes.sweep import loop as sweep_lib

    rates, seeds = grid_for(cells)
    reference = workdir + "_reference"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    expected = {r["cell_id"]: r for r in sweep_lib.Sweep(
        nqm_config(rates, seeds), reference, stream=io.StringIO()).run()}
    rng = random.Random(seed)
    history, start = [], time.perf_counter()
    ledger_dir = os.path.join(workdir, "ledger")

    def count():  # records on disk: a segment's lines but its header
        if not os.path.isdir(ledger_dir):
            return 0
        total = 0
        for name in os.listdir(ledger_dir):
            if name.startswith("seg-") and name.endswith(".jsonl"):
                with open(os.path.join(ledger_dir, name), "rb") as f:
                    total += f.read().count(b"\n") - 1
        return total

    done_kills = 0
    while True:
        process = subprocess.Popen(cli(workdir, rates, seeds), env=env(), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before, killed = count(), False
        if done_kills < kills:
            mode = rng.choice(["record", "time"])
            wait_until = time.monotonic() + rng.uniform(2.0, 12.0)
            target = before + rng.randint(1, max(2, len(expected) // (2 * kills)))
            while process.poll() is None:
                if (mode == "record" and count() >= target) or (
                        mode == "time" and time.monotonic() >= wait_until):
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.01)
        process.wait()
        done_kills += killed
        history.append((killed, process.returncode, count()))
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, history
    records = ledger.read(workdir)
    on_disk = []  # every record line of every segment, duplicates included
    for name in sorted(os.listdir(ledger_dir)):
        if name.startswith("seg-") and name.endswith(".jsonl"):
            with open(os.path.join(ledger_dir, name)) as f:
                on_disk += [json.loads(line)["cell_id"] for line in f.read().splitlines()[1:]]
    same = all(r["metrics"] == expected[r["cell_id"]]["metrics"]
               and r["status"] == expected[r["cell_id"]]["status"] for r in records)
    return {"mode": "kill_loop", "cells": len(expected), "kills": done_kills,
            "attempts": len(history), "wall_s": round(time.perf_counter() - start, 1),
            "one_record_per_cell": sorted(on_disk) == sorted(expected),
            "identical_results": same and len(records) == len(expected),
            "max_attempt": max(r["attempt"] for r in records), "history": history}


def _tensorboard_ready(logdir: str, expected: int) -> dict:
    import urllib.request

    port = _free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    start = time.monotonic()
    process = subprocess.Popen([tensorboard, f"--logdir={logdir}", "--host=127.0.0.1",
                                f"--port={port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin"
    body = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                      "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "effective_lr", "includeInResult": True}],
            "startIndex": 0, "sliceSize": 100, "includeMetrics": True}

    def post(route):
        request = urllib.request.Request(f"{base}/{route}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)

    try:
        sessions = -1  # until the server answers
        while sessions < expected:
            try:
                sessions = post("hparams/session_groups").get("totalSize", 0)
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() - start > 900:
                raise RuntimeError("tensorboard exited or never listed every session")
            time.sleep(0.5)
        hparams_s = time.monotonic() - start
        with urllib.request.urlopen(f"{base}/timeseries/tags", timeout=600) as response:
            runs = len(json.load(response).get("scalars", {}).get("runTagInfo", {}))
        timeseries_s = time.monotonic() - start
        again = time.monotonic()
        post("hparams/session_groups")
        return {"sessions": sessions, "hparams_ready_s": round(hparams_s, 1),
                "timeseries_ready_s": round(timeseries_s, 1), "scalar_runs": runs,
                "repeat_session_groups_request_s": round(time.monotonic() - again, 2)}
    finally:
        process.terminate()
        process.wait()


def count_runs(logdir: str) -> int:
    """Runs (directories below the root holding an event file): one session each."""
    return sum(1 for d, _, names in os.walk(logdir)
               if d != logdir and any("tfevents" in n for n in names))


def _startup_alone(workdir: str) -> float:
    """Seconds until TensorBoard answers on a logdir holding only the HParams experiment."""
    empty = os.path.join(workdir, "empty_logdir")
    os.makedirs(empty, exist_ok=True)
    from tf_sgd_regimes.sweep import summaries

    summaries.write_experiment(empty, nqm_config(3, 1), "quadratic", "test")
    return _tensorboard_ready(summaries.tensorboard_dir(empty), 0)["hparams_ready_s"]


def run_tensorboard(logdir: str, cells: Optional[int], workdir: str) -> dict:
    baseline = _startup_alone(workdir)
    sessions = cells if cells else count_runs(logdir)
    return {"mode": "tensorboard", "logdir": logdir, **_tensorboard_ready(logdir, sessions),
            "startup_alone_s": baseline}


def run_layouts(workdir: str, rounds: int) -> List[dict]:
    """The issue's sweep with each TensorBoard layout, alternated: sweep time, disk,
    and TensorBoard's load time on its logdir (one start-up on an empty logdir first)."""
    out = []
    out.append({"mode": "layouts", "startup_alone_s": _startup_alone(workdir)})
    print(json.dumps(out[-1]), flush=True)
    for i in range(rounds):
        for layout, limit in (("point", 0), ("cell", 10 ** 9)):
            directory = f"{workdir}/{layout}{i}"
            result = run_issue(directory, [f"--config.tensorboard.per_cell_sessions_max={limit}"])
            logdir = os.path.join(directory, "tensorboard")
            loaded = _tensorboard_ready(logdir, count_runs(logdir))
            result.update(mode="layouts", layout=layout, round=i, **loaded)
            result.pop("progress_lines", None)
            out.append(result)
            print(json.dumps(result), flush=True)
            shutil.rmtree(directory, ignore_errors=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["sizes", "issue", "workers", "kill_loop",
                                           "tensorboard", "layouts"],
                        default="sizes")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--cells", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2, help="--mode=layouts: rounds")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workdir", default="/tmp/benchmark_scale")
    parser.add_argument("--logdir", help="--mode=tensorboard: a sweep's tensorboard dir")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.mode == "sizes":
        for size in [int(s) for s in args.sizes.split(",")]:
            workdir = f"{args.workdir}/size{size}"
            print(json.dumps(run_size(size, workdir)), flush=True)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        return
    workdir = f"{args.workdir}/{args.mode}"
    if args.mode == "tensorboard":
        cells = args.cells if "--cells" in " ".join(sys.argv) else None
        print(json.dumps(run_tensorboard(args.logdir, cells, workdir)), flush=True)
        return
    if args.mode == "layouts":
        run_layouts(workdir, args.rounds)
        return
    if args.mode == "issue":
        result = run_issue(workdir)
    elif args.mode == "workers":
        result = run_workers(args.cells, args.workers, workdir)
    else:
        result = run_kill_loop(args.cells, args.kills, workdir)
    print(json.dumps(result), flush=True)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(workdir + "_reference", ignore_errors=True)


if __name__ == "__main__":
    main()

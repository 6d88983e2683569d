"""Records a sweep's progress events, and replays them through Progress to price its ETA.

    python tools/eta_replay.py --record=/tmp/ev.jsonl --workdir=/tmp/ev   # runs the demo
    python tools/eta_replay.py --replay=/tmp/ev.jsonl [--every=0.02] [--without_plan]
        [--work_shape=20,160]

--record runs `tf_sgd_regimes.run --no_report` in this process (other flags go to the
run) and writes every call the sweep makes on its Progress (start_pack, pack_step,
training_done, cell_done, end_pack) with its clock time, one JSON line each. --replay
feeds them to the current `progress.Progress` on a fake clock and tables its ETA against
the true time left (the last event's time minus the event's) at every --every of the
work from --from_work on, not only at the lines the demo happened to print: the same
run can be priced by several versions of the model. Truth is exact here, but the
replayed model's own costs (a few microseconds per call) are not in it. --without_plan
keeps from Progress the plan of work per batch size (and each pack's batch size), so it
prices the rest as before that plan: one rate per work unit (the finished packs') for every batch size.
--work_shape re-prices the recorded work with another step cost per batch size
(engine.WORK_SHAPE), for a run without XLA packs.
"""

import argparse
import inspect
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tf_sgd_regimes.sweep import progress as progress_lib  # noqa: E402

EVENTS = ("start_pack", "pack_step", "training_done", "cell_done", "end_pack")


def record(path: str, workdir: str, argv) -> None:
    out = open(path, "w")
    original_init = progress_lib.Progress.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        fields = {k: v for k, v in kwargs.items() if k not in ("stream", "clock")}
        fields.update(total_cells=self.total_cells, total_work=self.total_work)
        out.write(json.dumps({"t": self.clock(), "event": "init", "kwargs": fields}) + "\n")

    progress_lib.Progress.__init__ = init
    depth = [0]
    for name in EVENTS:
        method = getattr(progress_lib.Progress, name)

        def wrapped(self, *args, _method=method, _name=name, **kwargs):
            if depth[0] == 0:  # the sweep's calls, not Progress's own (end_pack's)
                out.write(json.dumps({"t": self.clock(), "event": _name, "args": args,
                                      "kwargs": kwargs}) + "\n")
            depth[0] += 1
            try:
                return _method(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(progress_lib.Progress, name, wrapped)
    from absl import app
    from tf_sgd_regimes import run as run_lib

    shutil.rmtree(workdir, ignore_errors=True)
    overrides, rest = run_lib.split_overrides(list(argv))
    try:
        app.run(lambda a: run_lib.main(a, overrides),
                argv=[sys.argv[0], f"--workdir={workdir}", "--no_report"] + rest)
    finally:
        out.close()


def reshape_work(events, shape) -> None:
    """Re-prices the recorded work units in place with a step cost of (B + overhead) x
    (1 + B / knee) per cell-step, `shape` = (overhead, knee or None): the ETA of the same
    run under another work model (engine.WORK_SHAPE). For runs without XLA packs (whose
    work the model also divides by engine.XLA_AUTO_SPEEDUP)."""
    def step_work(b):
        return progress_lib.cell_work(1, b, *shape)

    factor = 1.0
    for event in events[1:]:
        args, kwargs = event["args"], event["kwargs"]
        if event["event"] == "start_pack":
            b, cells, steps = kwargs["batch_size"], kwargs["cells"], kwargs["steps"]
            factor = step_work(b) * cells * steps / args[1]
            args[1] *= factor
        elif event["event"] in ("pack_step", "pack_resumed"):
            args[0] *= factor
        elif event["event"] == "end_pack":
            args[2] *= factor
    init = events[0]["kwargs"]
    plan = init.get("plan") or {}
    old = sum(row[0] for row in plan.values())
    for b, row in plan.items():
        row[0] = step_work(int(b)) * row[2]
    if old > 0:
        init["total_work"] *= sum(row[0] for row in plan.values()) / old


def replay(path: str, every: float, from_work: float, min_left_s: float,
           without_plan: bool = False, shape=None):
    """[(fraction of work, ETA, true time left)] at every `every` of the work."""
    with open(path) as f:
        events = [json.loads(line) for line in f]
    if shape is not None:
        reshape_work(events, shape)
    now = [events[0]["t"]]
    init = events[0]["kwargs"]
    total_cells = init.pop("total_cells")
    total_work = init.pop("total_work")
    init.pop("done_cells", None)
    init.pop("min_interval_s", None)
    if without_plan:
        init.pop("plan", None)
    # A recording made by a newer Progress replays through an older one (main's, from a
    # copy of its tree) without the arguments that one does not take.
    accepted = inspect.signature(progress_lib.Progress.__init__).parameters
    init = {k: v for k, v in init.items() if k in accepted}
    progress = progress_lib.Progress(total_cells, total_work, stream=open(os.devnull, "w"),
                                     min_interval_s=1e9, clock=lambda: now[0], **init)
    stepping = inspect.signature(progress_lib.Progress.pack_step).parameters
    end = events[-1]["t"]
    found, next_mark = [], from_work
    for event in events[1:]:
        now[0] = event["t"]
        if without_plan:
            event["kwargs"].pop("batch_size", None)
        if event["event"] == "pack_step" and "one_off_s" not in stepping:
            event["kwargs"].pop("one_off_s", None)
        getattr(progress, event["event"])(*event["args"], **event["kwargs"])
        fraction = (progress.work_done + progress._pack_done) / progress.total_work
        if fraction >= next_mark and end - now[0] >= min_left_s:
            found.append((fraction, progress.eta(), end - now[0]))
            while next_mark <= fraction:
                next_mark += every
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default="")
    parser.add_argument("--workdir", default="/tmp/eta_replay")
    parser.add_argument("--replay", nargs="*", default=[])
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--from_work", type=float, default=0.1)
    parser.add_argument("--min_left_s", type=float, default=3.0)
    parser.add_argument("--without_plan", action="store_true")
    parser.add_argument("--work_shape", default="",
                        help="OVERHEAD,KNEE (KNEE may be none): re-price the recorded work "
                             "with steps x (B + OVERHEAD) x (1 + B / KNEE) per cell")
    args, extra = parser.parse_known_args()
    if args.record:
        record(args.record, args.workdir, extra)
        return
    shape = None
    if args.work_shape:
        try:
            overhead, knee = args.work_shape.split(",")
            shape = (float(overhead), None if knee.lower() == "none" else float(knee))
        except ValueError:
            parser.error(f"--work_shape={args.work_shape}: give OVERHEAD,KNEE as numbers "
                         "(KNEE may be none), e.g. --work_shape=20,160 or 4,none")
    for path in args.replay:
        rows = replay(path, args.every, args.from_work, args.min_left_s, args.without_plan,
                      shape)
        worst = max((abs(eta - left) / left for _, eta, left in rows), default=0.0)
        print(f"{path}: worst {100 * worst:.0f}% over {len(rows)} points with >= "
              f"{args.min_left_s:g} s left")
        print("  " + "  ".join(f"{100 * f:.0f}%:{100 * (eta - left) / left:+.0f}"
                               for f, eta, left in rows))


if __name__ == "__main__":
    main()

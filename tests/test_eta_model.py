"""The ETA's compute price per batch size (sweep/eta_model.py) against hand-computed values."""

import io
import json
import math
import re
import sys

import pytest

from conftest import REPO
from tf_sgd_regimes.sweep import eta_model
from tf_sgd_regimes.sweep import progress as progress_lib


def test_a_measured_batch_size_is_priced_by_its_own_rate():
    points = [(8, 1.0), (32, 4.0)]
    assert eta_model.rate_at(points, 8) == 1.0
    assert eta_model.rate_at(points, 32) == 4.0
    assert eta_model.rate_at(points, 4) == 1.0  # below the smallest: the smallest's


def test_between_measured_batch_sizes_the_rate_is_a_power_of_b():
    # log-log: halfway in log B between 8 (1.0) and 32 (4.0) is 16, at sqrt(1.0 x 4.0).
    points = [(32, 4.0), (8, 1.0)]  # any order
    assert eta_model.rate_at(points, 16) == pytest.approx(2.0)
    # B = 8 x sqrt(2) is a quarter of the way in log B: 4 ** 0.25.
    assert eta_model.rate_at(points, 8 * 2 ** 0.5) == pytest.approx(2 ** 0.5)


def test_past_the_largest_the_work_models_scaling_where_it_is_cheaper():
    # A cell-step is B + 32 work units: the model's cost per example falls with B, so
    # the same rate per unit (2.0 at B = 32) is the cheaper scaling: 2.0 at B = 64
    # (the same cost per example would be 2.0 x 64 / 32 x 64 / 96 = 2.67).
    step_work = {b: b + 32.0 for b in (8, 32, 64)}
    points = [(8, 1.0), (32, 2.0)]
    assert eta_model.rate_at(points, 64, step_work) == 2.0
    assert eta_model.rate_at(points, 64) == 2.0  # no step work known: the same


def test_past_the_largest_no_less_than_the_highest_rate_measured():
    # B = 8 measured cheaper per unit than B = 4 (jitter, or XLA's prices): B = 16 is
    # priced at B = 4's 2.0, not 8's 1.5 (the same cost per example as B = 8 would be
    # 1.5 x 40 / 8 x 16 / 48 = 2.5, dearer).
    step_work = {b: b + 32.0 for b in (4, 8, 16)}
    points = [(4, 2.0), (8, 1.5)]
    assert eta_model.rate_at(points, 16, step_work) == 2.0
    assert eta_model.rate_at(points, 16) == 2.0
    assert eta_model.rate_at(points, 6, step_work) == pytest.approx(2.0 * 0.75 ** (
        math.log(6 / 4) / math.log(2)))  # between them: interpolated, not the highest


def test_past_the_largest_the_same_cost_per_example_where_that_is_cheaper():
    # With the knee (x (1 + B / 1024)) the model's cost per example rises past B = 181:
    # from B = 256 (360 units a cell-step) to 1024 (2112), the same cost per example,
    # 1.0 x 360 / 256 s, prices B = 1024 at 1.0 x 360 / 256 x 1024 / 2112 per unit.
    step_work = {b: (b + 32.0) * (1 + b / 1024) for b in (128, 256, 1024)}
    points = [(128, 0.5), (256, 1.0)]
    assert eta_model.rate_at(points, 1024, step_work) == pytest.approx(360.0 / 528.0)
    assert eta_model.rate_at(points, 1024) == 1.0  # no step work: the highest rate


def test_plan_counts_down_the_packs_started():
    plan = eta_model.Plan({"4": [900.0, 30, 3000], 8: [400.0, 20, 1000]})  # JSON keys too
    assert plan.step_work == {4: 0.3, 8: 0.4}
    plan.start(4, 300.0)
    assert plan.work_left() == {4: 600.0, 8: 400.0}
    plan.start(8, 500.0)  # a retried pack trains more than is left: none left
    assert plan.work_left() == {4: 600.0}


def _progress(cells, work, plan):
    """A Progress on a fake clock (`now[0]`, seconds) whose engine times its chunks."""
    now = [0.0]
    progress = progress_lib.Progress(cells, work, stream=io.StringIO(), min_interval_s=1e9,
                                     clock=lambda: now[0], engine_times_chunks=True,
                                     plan=plan)
    return progress, now


def _two_packs_measured(plan):
    """A Progress that measured B = 1 at 1 s per work unit (3 cells) and B = 2 at 2 s
    per unit (1 cell), 10 units each, and nothing else costing time; a B = 4 pack of 20
    units to come."""
    progress, now = _progress(5, 40.0, plan)
    for batch_size, rate, cells in ((1, 1.0, 3), (2, 2.0, 1)):
        progress.start_pack(f"pack B={batch_size}", 10.0, cells=cells, batch_size=batch_size)
        for work in (5.0, 10.0):
            now[0] += 5.0 * rate
            progress.pack_step(work, compute_s=5.0 * rate)
        progress.training_done()
        for _ in range(cells):
            progress.cell_done()
        progress.end_pack(0, 0, 10.0)
    return progress


def test_progress_prices_the_packs_to_come_by_their_batch_size():
    # A cell-step is 1/3, 2 and 4 work units at B = 1, 2, 4: B = 4 is priced at B = 2's
    # rate (the same cost per example, 2 x 2 / 2 s, gives the same), 2 s per unit.
    plan = {1: [10.0, 3, 30], 2: [10.0, 1, 5], 4: [20.0, 1, 5]}
    assert _two_packs_measured(plan).eta() == pytest.approx(2.0 * 20.0)
    # Without the plan, the recent packs holding half the cells (both) price it: 30 s
    # of compute for 20 units.
    assert _two_packs_measured(None).eta() == pytest.approx(1.5 * 20.0)



def test_a_pack_not_yet_measured_is_priced_at_its_own_batch_size_not_the_last_packs():
    # Packs need not come in ascending batch size (grid.spread): B = 2 at 2 s per work
    # unit, then B = 1 at 1 s, then B = 4, whose first chunk compiles (no measurement).
    plan = {1: [10.0, 3, 30], 2: [10.0, 1, 5], 4: [20.0, 1, 5]}
    progress, now = _progress(5, 40.0, plan)
    for batch_size, rate, cells in ((2, 2.0, 1), (1, 1.0, 3)):
        progress.start_pack(f"pack B={batch_size}", 10.0, cells=cells, batch_size=batch_size)
        for work in (5.0, 10.0):
            now[0] += 5.0 * rate
            progress.pack_step(work, compute_s=5.0 * rate)
        progress.end_pack(cells, 0, 10.0)
    progress.start_pack("pack B=4", 20.0, cells=1, batch_size=4)
    now[0] += 3.0
    progress.pack_step(5.0)  # compiled: not measured
    # Its 15 units left at B = 4's price from B = 1 and 2 (2 s per unit, past the largest),
    # not at the last pack's (B = 1's) 1 s; nothing else is left.
    assert progress.eta() == pytest.approx(2.0 * 15.0)


def test_one_offs_are_priced_by_kind_measured_else_a_share_of_the_first():
    predicted = [(1024, "trace"), (1, "compile"), (32, "trace"), (4, "compile"),
                 (128, None), [2, "compile"]]  # JSON gives lists
    one_offs = eta_model.OneOffs(predicted)
    assert one_offs.start(1024) == "trace"  # the session's first pack: 10 s of one-off
    # Nothing measured after the first: compiles at 0.6 x 10 s, traces at 0.2 x 10 s.
    assert one_offs.left(10.0) == pytest.approx(3 * 6.0 + 2.0)
    assert one_offs.start(1) == "compile"
    # The running compile (5 s so far) is a measurement of its kind.
    assert one_offs.left(10.0, ("compile", 5.0)) == pytest.approx(2 * 5.0 + 2.0)
    one_offs.add("compile", 5.0)
    assert one_offs.start(32) == "trace"
    one_offs.add("trace", 1.0)
    assert one_offs.start(4) == "compile"
    one_offs.add("compile", 3.0)
    assert one_offs.left(10.0) == pytest.approx(4.0)  # B = 2's compile at the mean
    assert one_offs.start(128) is None and one_offs.start(2) == "compile"
    assert one_offs.left(10.0) == 0.0 and one_offs.start(8) is None  # not predicted


def test_records_are_priced_per_cell_and_per_cell_step_once_two_step_counts_tell():
    # 0.2 s + 1e-5 s per step per cell, at 14 and at 1,000 steps: recovered exactly.
    packs = [{"cells": c, "steps": s, "records": c * (0.002 + 1e-5 * s)}
             for c, s in ((78, 14), (78, 1000), (40, 1000))]
    per_cell, per_step = eta_model.records_prices(packs)
    assert per_cell == pytest.approx(0.002) and per_step == pytest.approx(1e-5)
    # One step count: per cell only (0.5 s over 100 cells).
    assert eta_model.records_prices([{"cells": 100, "steps": 14, "records": 0.5}]) \
        == (pytest.approx(0.005), 0.0)
    # More records at fewer steps (a negative cost per step): per cell only.
    both = [{"cells": 10, "steps": 10, "records": 1.0}, {"cells": 10, "steps": 20,
                                                          "records": 0.6}]
    assert eta_model.records_prices(both) == (pytest.approx(0.08), 0.0)
    assert eta_model.records_prices([]) == (0.0, 0.0)


def test_a_first_pack_whose_only_chunk_traced_does_not_price_the_rest():
    # The digits WRN's first pack (B = 512, 28 steps: one chunk) traces in its only chunk,
    # so no chunk of it is timed and its training time holds the trace (here 30 s on 30 s
    # of compute). Once the next pack has timed a chunk, its rate prices the rest: the
    # first pack's time per work unit (twice the truth) read +44% here.
    plan = {512: [600.0, 1, 30], 32: [1200.0, 1, 400], 128: [700.0, 1, 100]}
    progress, now = _progress(3, 2500.0, plan)
    rate = 0.05  # compute seconds per work unit, at every batch size
    progress.start_pack("pack B=512", 600.0, cells=1, batch_size=512)
    now[0] += 30.0 + rate * 600.0  # trace + compute, one untimed chunk
    progress.pack_step(600.0)
    progress.training_done()
    progress.cell_done()
    progress.end_pack(0, 0, 600.0)
    progress.start_pack("pack B=32", 1200.0, cells=1, batch_size=32)
    now[0] += rate * 300.0
    progress.pack_step(300.0, compute_s=rate * 300.0)
    truth = rate * (900.0 + 700.0)
    assert progress.eta() == pytest.approx(truth, rel=0.01)


def test_a_first_pack_traced_apart_from_its_chunk_is_timed():
    # The engine traces a new runner in a call of no steps (ChunkReport.one_off_s), so the
    # WRN's one-chunk B = 512 pack is timed: 2 s of set-up, 30 s of trace, then its
    # compute at 0.1 s per unit. With B = 32 measured at 0.05, B = 128 lies between two
    # measured batch sizes: a line in log B gives 0.05 x 2 ** 0.5 per unit.
    plan = {512: [600.0, 1, 30], 32: [1200.0, 1, 400], 128: [700.0, 1, 100]}
    progress, now = _progress(3, 2500.0, plan)
    progress.start_pack("pack B=512", 600.0, cells=1, batch_size=512)
    now[0] += 2.0 + 30.0 + 0.1 * 600.0
    progress.pack_step(600.0, compute_s=0.1 * 600.0, one_off_s=30.0)
    progress.training_done()
    progress.cell_done()
    progress.end_pack(0, 0, 600.0)
    first = progress._packs[0]
    assert first["timed"] and first["compute"] == pytest.approx(60.0)
    assert first["one_off"] == pytest.approx(32.0)  # set-up and trace, as a traced chunk's
    progress.start_pack("pack B=32", 1200.0, cells=1, batch_size=32)
    now[0] += 0.05 * 300.0
    progress.pack_step(300.0, compute_s=0.05 * 300.0)
    truth = 0.05 * 900.0 + 0.05 * 2 ** 0.5 * 700.0
    assert progress.eta() == pytest.approx(truth, rel=0.01)


def test_until_a_later_pack_ends_the_first_packs_engine_time_and_records_price_the_rest():
    # A new runner traces its evaluation with its step (engine._PackRunner.warm), so the
    # first pack's engine time (here its evaluation, 0.5 s) and records (0.1 s, for as
    # many steps) are a later pack's too. The earlier prior, LATER_BASE_SHARE of the
    # first one-off (4 s), priced the third pack's at 0.2 s: the digits CNN's ETA read
    # 18-24% low until its second pack had ended.
    plan = {8: [10.0, 1, 10], 16: [10.0, 1, 10], 32: [10.0, 1, 10]}
    now = [0.0]
    progress = progress_lib.Progress(3, 30.0, stream=io.StringIO(), min_interval_s=1e9,
                                     clock=lambda: now[0], engine_times_chunks=True,
                                     plan=plan, total_steps=30.0,
                                     one_offs=[[8, "trace"], [16, None], [32, None]])
    rate = 0.1  # compute seconds per work unit at every batch size

    def train(batch_size, one_off=None):
        progress.start_pack(f"pack B={batch_size}", 10.0, cells=1, steps=10,
                            batch_size=batch_size)
        now[0] += (one_off or 0.0) + rate * 5.0
        progress.pack_step(5.0, compute_s=rate * 5.0, one_off_s=one_off)
        now[0] += rate * 5.0
        progress.pack_step(10.0, compute_s=rate * 5.0)

    def finish():
        now[0] += 0.5  # evaluation
        progress.training_done()
        now[0] += 0.1  # records
        progress.cell_done()
        progress.end_pack(0, 0, 10.0)

    train(8, one_off=4.0)
    finish()
    first = progress._packs[0]
    assert (first["one_off"], first["engine"], first["records"]) == pytest.approx(
        (4.0, 0.5, 0.1))
    progress.start_pack("pack B=16", 10.0, cells=1, steps=10, batch_size=16)
    now[0] += rate * 5.0
    progress.pack_step(5.0, compute_s=rate * 5.0)
    # Left: half of this pack's compute and its tail, then the third pack whole.
    truth = rate * 5.0 + 0.6 + rate * 10.0 + 0.6
    assert progress.eta() == pytest.approx(truth, rel=1e-6)
    # One pack cannot tell records per cell from per step: the packs left are priced at
    # the lower of the two. A first pack of 1,000 steps per cell recording in 1 s: two
    # cells of 100 steps to come, 0.2 s (per step); of 10,000 steps, 2 s (per cell).
    long_first = {"cells": 1, "steps": 1000.0, "gaps": 0.0, "engine": 0.0, "records": 1.0,
                  "kind": "trace"}
    for steps_left, records in ((200.0, 0.2), (20000.0, 2.0)):
        assert eta_model.besides_compute([long_first], 2, steps_left, 1, by_kind=True,
                                         first_one_off=4.0) == pytest.approx(records)


def test_the_running_packs_records_are_priced_by_its_own_cells_and_steps():
    # A pack's records grow with its steps (curves): the demo's took 0.3-0.6 s after its
    # B = 1 and 2 packs, 0.06-0.1 s after packs of 14-449 steps. The running pack's tail
    # was the last pack's whole tail, so a pack of few steps after one of many read its
    # records 0.3-0.5 s high. Now: the last pack's evaluation, then the records priced
    # per cell and per cell-step (records_prices) for this pack's cells and steps.
    plan = {1: [10.0, 2, 2000], 2: [10.0, 2, 200], 4: [10.0, 2, 20]}
    progress, now = _progress(6, 30.0, plan)
    per_cell, per_step, evaluation = 0.01, 0.0005, 0.2

    def pack(batch_size, steps, finish=True):
        progress.start_pack(f"pack B={batch_size}", 10.0, cells=2, steps=steps,
                            batch_size=batch_size)
        for work in (5.0, 10.0):
            now[0] += 0.1 * 5.0
            progress.pack_step(work, compute_s=0.1 * 5.0)
        if not finish:
            return
        now[0] += evaluation
        progress.training_done()
        for _ in range(2):
            now[0] += per_cell + per_step * steps
            progress.cell_done()
        progress.end_pack(0, 0, 10.0)

    pack(1, 1000)
    pack(2, 100)
    assert progress._packs[0]["records"] == pytest.approx(2 * (per_cell + per_step * 1000))
    pack(4, 10, finish=False)  # trained; its evaluation and records to come
    truth = evaluation + 2 * (per_cell + per_step * 10)
    assert progress.eta() == pytest.approx(truth, rel=1e-6)


def test_an_engine_that_measures_nothing_prices_its_first_packs_engine_time():
    # The NQM times no chunk and predicts no one-off. Its first pack's span holds the
    # session's start-up and its hand-out (here 0.3 s before its training), which is
    # all that tells what the later packs' hand-outs cost until one has finished: the
    # 13,530-cell sweep's second pack read -32% without it. Once a later pack has
    # finished, its own engine time prices the rest.
    now = [0.0]
    progress = progress_lib.Progress(3, 3.0, stream=io.StringIO(), min_interval_s=1e9,
                                     clock=lambda: now[0], total_steps=30.0)

    def pack(hand_out, train, records):
        now[0] += hand_out
        progress.start_pack("pack", 1.0, cells=1, steps=10, batch_size=8)
        now[0] += train
        progress.pack_step(1.0)
        progress.training_done()
        now[0] += records
        progress.cell_done()
        progress.end_pack(0, 0, 1.0)

    pack(0.3, 0.1, 0.4)
    assert progress.eta() == pytest.approx(2 * 0.8)
    pack(0.12, 0.1, 0.4)
    assert progress.eta() == pytest.approx(0.62)


def _recording(path, batch_sizes, seconds_per_example, steps_of):
    """A recorded sweep (tools/eta_replay.py's format) of one-cell packs whose compute
    costs `seconds_per_example` at every batch size and nothing else costs time; its
    work units are progress.cell_work's, steps x (B + 32)."""
    plan = {str(b): [progress_lib.cell_work(steps_of[b], b), 1, steps_of[b]]
            for b in batch_sizes}
    events = [{"t": 0.0, "event": "init", "kwargs": {
        "total_cells": len(batch_sizes), "total_work": sum(r[0] for r in plan.values()),
        "engine_times_chunks": True, "plan": plan, "total_steps": sum(steps_of.values()),
        "one_offs": [[b, None] for b in batch_sizes]}}]
    t = 0.0
    for b in batch_sizes:
        work, steps = plan[str(b)][0], steps_of[b]
        events.append({"t": t, "event": "start_pack", "args": ["pack", work],
                       "kwargs": {"cells": 1, "steps": steps, "batch_size": b}})
        for part in (1, 2):  # two chunks: the first's start is set-up, so no gap either
            t += seconds_per_example * b * steps / 2
            events.append({"t": t, "event": "pack_step", "args": [work * part / 2, ""],
                           "kwargs": {"compute_s": seconds_per_example * b * steps / 2}})
        events += [{"t": t, "event": name, "args": args, "kwargs": {}} for name, args in
                   (("training_done", []), ("cell_done", [False]), ("end_pack", [0, 0, work]))]
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(e) for e in events) + "\n")


def test_replay_reprices_a_recording_with_another_work_shape(tmp_path):
    # A convnet's cost per example is flat in B (the digits WRN: within 7% from 32 to
    # 512); priced with steps x (B + 32), its first pack (B = 512) prices the smaller
    # batches' steps too dear. tools/eta_replay.py --work_shape=0,none re-prices the
    # same recording with steps x B, where the ETA is exact.
    sys.path.insert(0, str(REPO / "tools"))
    import eta_replay

    path = str(tmp_path / "wrn.jsonl")
    _recording(path, (512, 32, 128), 1e-3, {512: 28, 32: 449, 128: 112})
    flat = eta_replay.replay(path, 0.01, 0.05, 0.0, shape=(0.0, None))
    assert flat and all(eta == pytest.approx(left, rel=1e-6) for _, eta, left in flat)
    recorded = eta_replay.replay(path, 0.01, 0.05, 0.0)
    assert max(eta / left for _, eta, left in recorded if left > 0) > 1.2


def test_gaps_before_a_later_pack_finishes_are_priced_with_the_running_packs():
    # A gap comes per chunk, not per step: the demo's first pack (B = 1024, 14 steps) had
    # one gap of 4 ms, which alone priced the 14,000 steps to come at 4 s where they paid
    # 0.3 s. Pooled with the running pack's gaps (here 0.09 s over 990 steps), the rate
    # is 0.1 s per 1,000 steps.
    first = {"cells": 1, "steps": 10.0, "gaps": 0.01, "engine": 0.0, "records": 0.0,
             "kind": "trace"}
    pooled = eta_model.besides_compute([first], cells_left=0, steps_left=2000.0,
                                       running_cells=1, by_kind=True, first_one_off=0.0,
                                       running_gaps=(0.09, 990.0))
    assert pooled == pytest.approx(0.1 / 1000 * 2000)
    # Without a running pack's, the first pack's own; once a later pack has finished,
    # its gaps alone (0.02 s over 400 steps), not the running pack's.
    assert eta_model.besides_compute([first], 0, 2000.0, 1, by_kind=True,
                                     first_one_off=0.0) == pytest.approx(2.0)
    later = dict(first, kind=None, steps=400.0, gaps=0.02)
    assert eta_model.besides_compute([first, later], 0, 2000.0, 1, by_kind=True,
                                     running_gaps=(0.09, 990.0)) == pytest.approx(0.1)


def test_eta_check_records_its_live_run_for_replay(tmp_path):
    # tools/eta_check.py --run --events: the live run goes through eta_replay's recorder,
    # so the run it checks can be replayed part by part. A 2 x 11 x 2-cell NQM sweep.
    import subprocess

    log, events = tmp_path / "run.log", tmp_path / "run.jsonl"
    command = [sys.executable, str(REPO / "tools" / "eta_check.py"), "--run",
               "--experiment=nqm_epoch_budget", f"--workdir={tmp_path / 'work'}",
               f"--log={log}", f"--events={events}", "--floor", "--config.sweep.seeds=(0,)",
               "--config.sweep.effective_lrs=(0.25,0.5)", "--config.analysis.num_seeds=1",
               "--config.analysis.best_k=1"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "worst error" in out.stdout
    # --floor: the fixed workload ran for about the sweep's span and was priced.
    floor = re.search(r"machine floor, a fixed workload over (\d+) s .*: (\d+)%", out.stdout)
    assert floor is not None, out.stdout
    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    assert recorded[0]["event"] == "init" and recorded[0]["kwargs"]["total_cells"] == 44
    assert sum(e["event"] == "end_pack" for e in recorded) == 11
    assert "cells 44/44" in log.read_text()
    sys.path.insert(0, str(REPO / "tools"))
    import eta_replay

    assert eta_replay.replay(str(events), 0.1, 0.0, 0.0)  # it replays
    # --events without --run, or into a missing directory: refused by name, nothing run.
    for flags in (["--events=" + str(events)],
                  ["--run", "--events=" + str(tmp_path / "missing" / "x.jsonl")]):
        bad = subprocess.run([sys.executable, str(REPO / "tools" / "eta_check.py"),
                              f"--log={tmp_path / 'other.log'}"] + flags,
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert bad.returncode == 2 and "--events" in bad.stderr
        assert not (tmp_path / "other.log").exists()
    # Without --log (nor --machine_s): refused by name.
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "eta_check.py")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "--log" in bad.stderr


def test_the_machine_floor_is_a_perfect_cost_models_error_on_equal_units():
    # tools/eta_check.py --floor: ten equal units, the first five 1 s each and the last
    # five 2 s. At 10% of the work (1 unit done) the exact model says 9 x 1 s are left
    # against 14 s: -5/14. At 50% (5 done): 5 s against 10 s, -1/2. At 60% (6 done, mean
    # 7/6 s): 4 x 7/6 against 8 s, -5/12.
    sys.path.insert(0, str(REPO / "tools"))
    import eta_check

    ends = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    assert eta_check.exact_model_worst(ends, [0.1, 0.6], 0.0) == pytest.approx(5 / 12)
    assert eta_check.exact_model_worst(ends, [0.1, 0.5, 0.6], 0.0) == pytest.approx(0.5)
    # Lines with less than min_left_s left are not counted: at 11 s only the first.
    assert eta_check.exact_model_worst(ends, [0.1, 0.5, 0.6], 11.0) == pytest.approx(5 / 14)
    # A machine of steady speed: no error at all.
    assert eta_check.exact_model_worst([float(i) for i in range(1, 11)],
                                       [0.1, 0.5, 0.9], 0.0) == pytest.approx(0.0)
    # Priced by the latest half of the units done: at 60%, units 4-6 took 4 s, so 4 x 4/3
    # against 8 s, -1/3. At a rate known beforehand, 1.5 s: 13.5 against 14 s at 10%,
    # 7.5 against 10 at 50%, 6 against 8 at 60%.
    assert eta_check.exact_model_worst(ends, [0.6], 0.0, "latest_half") == pytest.approx(1 / 3)
    assert eta_check.exact_model_worst(ends, [0.1, 0.5, 0.6], 0.0, 1.5) == pytest.approx(0.25)
    ran = eta_check.fixed_workload(0.2)
    assert ran[-1] >= 0.2 and ran == sorted(ran) and len(ran) >= 2


def test_simulated_sweeps_miss_only_where_the_speed_changes():
    # --machine_s: sweeps of 50 units (50 s at the median unit of 1 s) cut every 5 units
    # from 300 units of 1 s and then 100 of 3 s. Those wholly before or after the change
    # are priced exactly; those across it are not.
    sys.path.insert(0, str(REPO / "tools"))
    import eta_check

    ends, t = [], 0.0
    for seconds in [1.0] * 300 + [3.0] * 100:
        t += seconds
        ends.append(t)
    worst = eta_check.simulated_sweeps(ends, 50.0, 0.0)
    starts = list(range(0, 351, 5))
    assert len(worst) == len(starts)
    for start, error in zip(starts, worst):
        if start + 50 <= 300 or start >= 300:
            assert error == pytest.approx(0.0, abs=1e-9), start
        else:
            assert error > 0.05, start
    assert eta_check.simulated_sweeps(ends[:60], 50.0, 0.0) == []  # too short for two
    table = eta_check.machine_table(ends, 0.0, lengths=(50,))
    assert table.splitlines()[-1].startswith("| 50 s | 71 |")

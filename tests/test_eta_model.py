"""The ETA's compute price per batch size (sweep/eta_model.py) against hand-computed values."""

import io

import pytest

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


def test_past_the_largest_seconds_per_step_follow_a_line_in_b():
    # Step seconds 10 + 2 B at B = 16, 32, 64; a cell-step is B + 32 work units.
    step_work = {b: b + 32.0 for b in (16, 32, 64, 128, 1024)}
    points = [(b, (10.0 + 2.0 * b) / step_work[b]) for b in (16, 32, 64)]
    assert eta_model.rate_at(points, 128, step_work) == pytest.approx(266.0 / 160.0)
    assert eta_model.rate_at(points, 1024, step_work) == pytest.approx(2058.0 / 1056.0)
    # Only the largest EXTRAPOLATE_FROM count: a cheap B = 2 does not bend the line.
    with_small = points + [(2, 5.0)]
    assert eta_model.rate_at(with_small, 128, step_work) == pytest.approx(266.0 / 160.0)


def test_past_the_largest_never_below_its_own_rate():
    # Step seconds falling with B (64 per step at B = 32, 48 at 64): the line would price
    # B = 128 at 16 s a step, 0.1 per unit; the largest's own rate, 0.5, is the floor.
    step_work = {32: 64.0, 64: 96.0, 128: 160.0}
    points = [(32, 1.0), (64, 0.5)]
    assert eta_model.rate_at(points, 128, step_work) == 0.5
    assert eta_model.rate_at(points, 128) == 0.5  # no step work known: the same floor
    assert eta_model.rate_at([(64, 0.5)], 128, step_work) == 0.5  # one point: no line


def test_plan_counts_down_the_packs_started():
    plan = eta_model.Plan({"4": [900.0, 30, 3000], 8: [400.0, 20, 1000]})  # JSON keys too
    assert plan.step_work == {4: 0.3, 8: 0.4}
    plan.start(4, 300.0, 10, 100)
    assert plan.work_left() == {4: 600.0, 8: 400.0}
    plan.start(8, 500.0, 20, 50)  # a retried pack trains more than is left: none left
    assert plan.work_left() == {4: 600.0}


def _two_packs_measured(plan):
    """A Progress that measured B = 1 at 1 s per work unit and B = 2 at 2 s per unit,
    10 units each, and nothing else costing time; a B = 4 pack of 20 units to come."""
    now = [0.0]
    progress = progress_lib.Progress(3, 40.0, stream=io.StringIO(), min_interval_s=1e9,
                                     clock=lambda: now[0], engine_times_chunks=True,
                                     plan=plan)
    for batch_size, rate in ((1, 1.0), (2, 2.0)):
        progress.start_pack(f"pack B={batch_size}", 10.0, cells=1, batch_size=batch_size)
        for work in (5.0, 10.0):
            now[0] += 5.0 * rate
            progress.pack_step(work, compute_s=5.0 * rate)
        progress.training_done()
        progress.cell_done()
        progress.end_pack(0, 0, 10.0)
    return progress


def test_progress_prices_the_packs_to_come_by_their_batch_size():
    # A cell-step is 1, 2 and 4 work units at B = 1, 2, 4: step seconds 1 at B = 1 and
    # 4 at B = 2, so the line gives 10 at B = 4, 2.5 per unit (above B = 2's own 2).
    plan = {1: [10.0, 1, 10], 2: [10.0, 1, 5], 4: [20.0, 1, 5]}
    assert _two_packs_measured(plan).eta() == pytest.approx(2.5 * 20.0)
    # Without the plan, the last pack's rate (the recent half of the cells) prices all.
    assert _two_packs_measured(None).eta() == pytest.approx(2.0 * 20.0)

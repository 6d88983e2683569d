"""Fault injection on a tiny CPU sweep: kill -9, SIGTERM, corruption, NaN, config, ENOSPC."""

import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import time

import pytest
from absl import flags

import sweep_fixtures as fx
from tf_sgd_regimes import atomic
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import grid, ledger, progress, resume, signals
from tf_sgd_regimes.sweep import loop as sweep_lib

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny sweep: its workdir and records by cell."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    sweep_lib.Sweep(fx.config(), workdir, stream=io.StringIO()).run()
    return workdir, fx.read_records(workdir)


def _expected_cells(config):
    from tf_sgd_regimes.sweep import loop as s

    dataset = s.load_dataset(config)
    return {c.cell_id for c in grid.all_cells(config, dataset.steps_per_epoch)}


def _assert_same_results(records, reference_records, exact=True):
    """Same cells, statuses and metrics; bit for bit unless a pack's shape changed
    (packing members differently changes float rounding, ~1e-8)."""
    assert set(records) == set(reference_records)
    for cell_id, record in records.items():
        expected = reference_records[cell_id]
        assert (record["status"], record["diverged_step"], record["steps_done"]) == (
            expected["status"], expected["diverged_step"], expected["steps_done"]), cell_id
        if exact:
            assert record["metrics"] == expected["metrics"], cell_id
        else:
            assert record["metrics"] == pytest.approx(expected["metrics"], rel=1e-5), cell_id


def _assert_tensorboard_clean(workdir, reference_dir, cell_ids):
    """No step twice, none backwards; every value equals the uninterrupted run's."""
    for cell_id in cell_ids:
        run = fx.run_dir(workdir, cell_id)
        seen = fx.scalar_events(run, "train/loss")
        steps = [step for step, _ in seen]
        assert steps == sorted(set(steps)), f"{cell_id}: duplicated or backwards steps {steps}"
        expected = dict(fx.scalar_events(fx.run_dir(reference_dir, cell_id), "train/loss"))
        for step, value in seen:
            assert value == pytest.approx(expected[step], rel=1e-6), (cell_id, step)
        assert len(fx.scalar_events(run, "final/diverged")) == 1, cell_id


def _manifests(workdir):
    root = resume.checkpoints_dir(workdir)
    out = {}
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name, pack_checkpoint.MANIFEST)
            try:
                out[name] = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                pass
    return out


def _manifest_step(workdir):
    (name,) = _manifests(workdir)
    path = os.path.join(resume.checkpoints_dir(workdir), name, pack_checkpoint.MANIFEST)
    with open(path) as f:
        return json.load(f)["step"]


def test_kill_9_and_sigterm_loop_loses_nothing_and_matches_an_uninterrupted_run(reference,
                                                                                tmp_path):
    """Promises 1, 3, 4, 6: SIGKILL at random moments 10+ times (mid-write too), one SIGTERM.

    Kills land right after a record appears (between a pack's record writes), at a
    random moment after a checkpoint, or at a random time from start-up (imports,
    keras-tuner and TensorBoard writes). The SIGTERM must save a checkpoint at the step
    it names, exit 75, and the next start must resume from it. How many records slip
    through before a kill lands depends on the machine's speed; a sweep that finishes
    before the 10th kill is checked and the loop goes on in a fresh work directory.
    """
    reference_dir, reference_records = reference
    rng = random.Random(4)
    kills, resumed, preempted, attempt, max_attempt = 0, 0, False, 0, 0
    history = []  # (round, mode, hit, records after): shows the margin in a failure
    for round_ in range(4):
        workdir = str(tmp_path / f"killed{round_}")
        while True:
            mode, hit, process, output = _one_attempt(workdir, attempt, kills, rng)
            attempt += 1
            kills += hit and mode != "sigterm"
            resumed += output.count("resumed from checkpoint")
            history.append((round_, mode, hit, fx.record_count(workdir)))
            if process.returncode == 0:
                break
            if mode == "sigterm":
                assert process.returncode == signals.EXIT_PREEMPTED, output[-3000:]
                match = re.search(r"stopped at step (\d+)", output)
                if match:  # the signal came mid-pack: the checkpoint is at the step it names
                    assert _manifest_step(workdir) == int(match.group(1))
                else:  # it came between packs: nothing was training, nothing to save
                    assert "stop requested (SIGTERM)" in output, output[-3000:]
                preempted = True
                continue
            assert process.returncode == -signal.SIGKILL, (history, output[-3000:])
            assert attempt < 60, history
        records = fx.read_records(workdir)
        assert set(records) == _expected_cells(fx.config())  # every cell, once on disk
        assert [r["cell_id"] for r in ledger.read(workdir)] == sorted(records)
        _assert_same_results(records, reference_records)
        _assert_tensorboard_clean(workdir, reference_dir, records)
        assert not os.path.exists(resume.checkpoints_dir(workdir))  # cleaned up at the end
        max_attempt = max(max_attempt, max(r["attempt"] for r in records.values()))
        if kills >= 10:
            break
    print("kill loop:", history)
    assert kills >= 10 and preempted, history
    assert max_attempt >= 2  # records say which attempt
    assert resumed >= 2, history  # packs continued mid-training from their checkpoints


def _one_attempt(workdir, attempt, kills, rng):
    """Starts the sweep, waits for this attempt's moment, kills (or SIGTERMs) it.

    Returns (mode, hit, finished process, its output). Every wait also ends when a new
    record lands, so that one kill lets few records through however fast the machine.
    """
    process = subprocess.Popen(fx.cli_args(workdir), env=fx.env(), cwd=fx.REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    modes = ["record", "checkpoint", "startup"]
    mode = "sigterm" if attempt == 4 else modes[attempt % 3] if kills < 11 else "none"
    records_before, manifests_before = fx.record_count(workdir), _manifests(workdir)

    def new_record():
        return fx.record_count(workdir) > records_before

    if mode == "record":
        hit = _wait_for(new_record, process, 180)
    elif mode in ("checkpoint", "sigterm"):
        hit = _wait_for(lambda: new_record() or (bool(_manifests(workdir))
                        and _manifests(workdir) != manifests_before), process, 180)
        if mode == "checkpoint" and hit:
            hit = _wait_for(_after(rng.uniform(0.0, 0.3), new_record), process, 180)
    elif mode == "startup":
        hit = _wait_for(_after(rng.uniform(0.5, 5.0), new_record), process, 180)
    else:
        hit = False
    hit = hit and process.poll() is None
    if hit and mode == "sigterm":
        process.send_signal(signal.SIGTERM)
    elif hit:
        process.kill()
    output, _ = process.communicate(timeout=300)
    return mode, hit, process, output


def _wait_for(predicate, process, timeout):
    """Polls until predicate() or the process exits; True if predicate() came first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the sweep")


def _after(seconds, or_when):
    """A predicate that turns true `seconds` from now, or earlier when or_when() does."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline or or_when()


# -- in-process faults -------------------------------------------------------------------

def _sweep(workdir, *extra, **kwargs):
    stream = kwargs.pop("stream", None) or io.StringIO()
    return sweep_lib.Sweep(fx.config(*extra), str(workdir), stream=stream,
                           progress_interval_s=1e9, **kwargs), stream


def test_a_corrupt_ledger_record_is_refused_with_its_path_and_what_to_do(reference, tmp_path):
    """Promise 3 (ledger), through the CLI: exit 2, the path, the fix; then the fix works."""
    reference_dir, reference_records = reference
    workdir = str(tmp_path / "w")
    _copy_ledger(reference_dir, workdir, count=4, per_segment=2)
    victim = fx.ledger_files(workdir)[1]  # the second segment: two cells
    with open(victim, "r+") as f:
        f.truncate(25)
    code, stderr = _cli_in_process(workdir)
    assert code == 2
    assert victim in stderr and "mv " in stderr
    os.rename(victim, victim + ".corrupt")  # what the message says to do
    code, _ = _cli_in_process(workdir)
    assert code == 0
    records = fx.read_records(workdir)
    # The victim trains in a smaller pack than in the reference run.
    _assert_same_results(records, reference_records, exact=False)


def _copy_ledger(source, workdir, count, per_segment=100):
    """The first `count` records of `source` (by cell id), `per_segment` to a segment."""
    records = ledger.read(source)[:count]
    for start in range(0, count, per_segment):
        ledger.commit(workdir, records[start:start + per_segment])
    assert len(fx.ledger_files(workdir)) == -(-count // per_segment)


def _cli_in_process(workdir, *extra):
    """run.main as the CLI calls it (absl flags parsed), capturing stderr."""
    import contextlib

    from tf_sgd_regimes import run

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run", f"--workdir={workdir}", "--no_report"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run.main(["run"], [f"--config.{o}" for o in fx.TINY + tuple(extra)])
    return code, err.getvalue()


def test_corrupt_keras_tuner_files_are_reported_and_rebuilt_from_the_ledger(reference,
                                                                             tmp_path):
    """Promise 3 (keras-tuner state): named, rebuilt, nothing retrained."""
    reference_dir, _ = reference
    workdir = str(tmp_path / "w")
    _copy_ledger(reference_dir, workdir, count=12)
    sweep, _ = _sweep(workdir)
    sweep.run()
    tuner_dir = os.path.join(workdir, "keras_tuner", "oracle")
    oracle_json = os.path.join(tuner_dir, "oracle.json")
    # The whole state is one file (no trial_*/ directory per trial).
    assert os.listdir(tuner_dir) == ["oracle.json"]
    with open(oracle_json) as f:
        assert len(json.load(f)["trials"]) == 12
    with open(oracle_json, "r+") as f:
        f.truncate(os.path.getsize(oracle_json) // 2)
    before = {p: os.stat(p).st_mtime_ns for p in fx.ledger_files(workdir)}
    sweep, stream = _sweep(workdir)
    sweep.run()
    text = stream.getvalue()
    assert oracle_json in text and "rebuilding" in text
    assert {p: os.stat(p).st_mtime_ns for p in fx.ledger_files(workdir)} == before
    assert grid.check_tuner_state(os.path.join(workdir, "keras_tuner")) == []
    with open(oracle_json) as f:
        assert len(json.load(f)["end_order"]) == 12  # the rebuilt oracle saw every cell


def test_a_corrupt_checkpoint_is_reported_and_the_pack_retrained(reference, tmp_path):
    """Promise 3 (checkpoints) and 4: same numbers, no TensorBoard step twice."""
    reference_dir, reference_records = reference
    workdir = str(tmp_path / "w")
    chunks = {"n": 0}

    def stop_after_some_chunks():
        chunks["n"] += 1
        return chunks["n"] == 6

    sweep, _ = _sweep(workdir, "train.checkpoint_every_s=0.0")
    with pytest.raises(pack_checkpoint.Preempted):
        sweep.run(should_stop=stop_after_some_chunks)
    (name,) = _manifests(workdir)
    directory = os.path.join(resume.checkpoints_dir(workdir), name)
    (step_dir,) = [d for d in os.listdir(directory) if d.startswith("step-")]
    data = [f for f in os.listdir(os.path.join(directory, step_dir)) if ".data-" in f][0]
    with open(os.path.join(directory, step_dir, data), "r+b") as f:
        f.truncate(10)
    sweep, stream = _sweep(workdir, "train.checkpoint_every_s=0.0")
    records = {r["cell_id"]: r for r in sweep.run()}
    assert directory in stream.getvalue() and "retraining the pack from step 0" in \
        stream.getvalue()
    _assert_same_results(records, reference_records)
    _assert_tensorboard_clean(workdir, reference_dir, records)


def test_disk_full_stops_cleanly_and_a_restart_completes(reference, tmp_path, monkeypatch):
    """Promise 8: ENOSPC in a ledger write, then in a checkpoint write."""
    _, reference_records = reference
    workdir = str(tmp_path / "w")
    real_commit, real_write = ledger.Ledger.commit, atomic.write_atomic
    calls = {"commit": 0}

    def full_after_one_pack(self, records, **kwargs):
        calls["commit"] += 1
        if calls["commit"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_commit(self, records, **kwargs)

    monkeypatch.setattr(ledger.Ledger, "commit", full_after_one_pack)
    code, stderr = _cli_in_process(workdir)
    assert code == signals.EXIT_DISK_FULL
    assert "no space left" in stderr.lower() and "re-run" in stderr
    kept = {p: open(p).read() for p in fx.ledger_files(workdir)}
    assert len(kept) == 1 and len(ledger.read(workdir)) == 3  # the first pack's records
    assert not [n for n in os.listdir(ledger.ledger_dir(workdir)) if n.startswith(".tmp")]

    def full_for_checkpoints(path, text, fsync=True):
        if path.endswith(pack_checkpoint.MANIFEST):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, text, fsync)

    monkeypatch.setattr(ledger.Ledger, "commit", real_commit)
    monkeypatch.setattr(atomic, "write_atomic", full_for_checkpoints)
    sweep, _ = _sweep(workdir)
    with pytest.raises(sweep_lib.DiskFullError, match="records written so far are intact"):
        sweep.run()
    assert {p: open(p).read() for p in kept} == kept

    monkeypatch.setattr(atomic, "write_atomic", real_write)  # space freed
    code, _ = _cli_in_process(workdir)
    assert code == 0
    records = fx.read_records(workdir)
    assert {p: open(p).read() for p in kept} == kept
    _assert_same_results(records, reference_records)


def test_a_changed_config_is_refused_and_a_grown_grid_runs_only_new_cells(reference, tmp_path):
    """Promise 7, through the CLI."""
    reference_dir, reference_records = reference
    workdir = str(tmp_path / "w")
    _copy_ledger(reference_dir, workdir, count=12)
    code, _ = _cli_in_process(workdir)  # saves config.json; nothing left to train
    assert code == 0
    code, stderr = _cli_in_process(workdir, "l2=0.001")
    assert code == 2 and "l2" in stderr and "--workdir" in stderr
    code, stderr = _cli_in_process(workdir, "sweep.seeds=(0,)")
    assert code == 2 and "sweep.seeds" in stderr and "dropped" in stderr
    before = {p: open(p).read() for p in fx.ledger_files(workdir)}
    code, _ = _cli_in_process(workdir, "sweep.effective_lrs=(0.05,0.1,0.2,0.8)")
    assert code == 0
    records = fx.read_records(workdir)
    assert {p: open(p).read() for p in before} == before  # never rewritten
    new = set(records) - set(reference_records)
    assert len(new) == 4 and all("_lr0.1_" in c for c in new)


def test_a_work_directory_begun_in_ascending_order_resumes_in_the_spread_order(reference,
                                                                              tmp_path):
    """A sweep stopped mid-pack under the old order (smallest batch first) resumes under
    the default spread order: the stopped pack first from its checkpoint, then the rest,
    each cell once, every result the spread-order reference's."""
    reference_dir, reference_records = reference
    workdir = str(tmp_path / "w")
    process = subprocess.Popen(fx.cli_args(workdir, "sweep.pack_order=ascending"),
                               env=fx.env(), cwd=fx.REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # Stopped once the first pack is recorded, so in or just before the second (B = 16's
    # second half); waiting for its periodic checkpoint as well raced a fast machine,
    # whose short packs could end before one was due.
    assert _wait_for(lambda: fx.record_count(workdir) >= 3, process, 180)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == signals.EXIT_PREEMPTED, output[-3000:]
    before = fx.read_records(workdir)
    # The old order: B = 16's cells first, then B = 32's (a fast machine may be past the
    # B = 16 packs when the signal comes); and some cells left to resume.
    small = {c for c in _expected_cells(fx.config()) if "_B00016_" in c}
    assert before and len(before) < len(_expected_cells(fx.config()))
    assert set(before) <= small or small <= set(before), sorted(before)
    resumed = fx.run_cli(workdir)  # the config's default order
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    if re.search(r"stopped at step (\d+)", output):  # the signal came mid-pack
        assert "resumed from checkpoint" in resumed.stdout + resumed.stderr
    records = fx.read_records(workdir)  # fails if a cell has two records
    assert set(records) == _expected_cells(fx.config())
    assert [r["cell_id"] for r in ledger.read(workdir)] == sorted(records)
    _assert_same_results(records, reference_records)
    assert not os.path.exists(resume.checkpoints_dir(workdir))


def test_divergence_never_stops_a_sweep_and_is_never_optimal(tmp_path):
    """Promise 5: 4 cells in a row diverge at step 1; the sweep finishes; optimum is finite."""
    sweep, _ = _sweep(tmp_path, "sweep.batch_sizes=(32,)", "sweep.optimizers=('sgd',)",
                      "sweep.effective_lrs=(0.1,0.4,64.0,128.0)", "train.divergence_loss=5.0",
                      "train.checkpoint_every_s=0.0")
    records = sweep.run()
    assert len(records) == 8
    diverged = [r for r in records if r["status"] == "diverged"]
    assert {r["hparams"]["effective_lr"] for r in diverged} == {64.0, 128.0}
    assert len(diverged) == 4 and all(r["diverged_step"] is not None for r in diverged)
    assert all(r["diverged_step"] <= 2 for r in diverged)
    assert all(v is None for r in diverged for v in r["metrics"].values())
    settings = analysis.settings_from(sweep.config.analysis)
    optimal = analysis.optima(analysis.cell_stats(records, settings), settings)
    assert set(optimal["optimal_lr"]) == {0.4}


def test_a_cell_that_diverges_after_a_good_epoch_is_still_diverged(tmp_path):
    """Promise 5: softmax regression (no dead units) with a warmup ramp to a rate ~2x past
    its stability edge: it trains well, then blows up after more than an epoch."""
    sweep, _ = _sweep(tmp_path, "model.hidden=()", "l2=0.0", "budget.epochs=8.0",
                      "sweep.batch_sizes=(32,)", "sweep.optimizers=('sgd',)",
                      "sweep.effective_lrs=(12.0,14.0)", "sweep.seeds=(0,1,2)",
                      "sweep.pack_size=0", "schedule.warmup_steps=180",
                      "train.divergence_loss=5.0", "train.checkpoint_every_s=0.0")
    records = sweep.run()
    assert len(records) == 6
    steps_per_epoch = sweep.dataset.steps_per_epoch(32)
    for record in records:
        assert record["status"] == "diverged", record["cell_id"]
        assert record["diverged_step"] > steps_per_epoch  # after a good epoch
        assert all(v is None for v in record["metrics"].values())
        losses = fx.scalar_events(fx.run_dir(tmp_path, record["cell_id"]), "train/loss")
        before = [value for step, value in losses if step < record["diverged_step"]]
        assert min(before) < 0.5 * before[0]  # it had trained well first


def test_progress_eta_weights_steps_by_batch_plus_overhead():
    """Overall and per-pack ETA from work = steps x (B + 32), with a fake clock."""
    now = [0.0]
    out = io.StringIO()
    small, large = progress.cell_work(100, 4), progress.cell_work(100, 1024)
    assert small == 100 * 36 and large == 100 * 1056
    meter = progress.Progress(2, small + large, stream=out, min_interval_s=0.0,
                              clock=lambda: now[0])
    meter.start_pack("small", small)
    now[0] = 10.0
    meter.pack_step(small / 2)
    assert meter.pack_eta() == pytest.approx(10.0)
    assert meter.eta() == pytest.approx(10.0 / (small / 2) * (small / 2 + large))
    meter.end_pack(1, 0, small)
    meter.start_pack("large", large)
    meter.pack_resumed(large / 4)  # restored work is done but was not paid for now
    now[0] = 30.0
    meter.pack_step(large / 2)
    assert meter.pack_eta() == pytest.approx(20.0 / (large / 4) * (large / 2))
    lines = out.getvalue().splitlines()
    assert all(line.startswith("[sweep] cells ") for line in lines)
    assert "\r" not in out.getvalue() and "ETA" in lines[-1]


def test_checkpoints_of_fully_recorded_packs_are_pruned_and_others_kept(tmp_path):
    """A kill between a pack's last record and its checkpoint's removal leaves an orphan."""
    root = resume.checkpoints_dir(str(tmp_path))
    manifests = {"done": ["a", "b"], "half": ["c", "d"], "corrupt": None}
    for name, cells in manifests.items():
        os.makedirs(os.path.join(root, name))
        with open(os.path.join(root, name, pack_checkpoint.MANIFEST), "w") as f:
            f.write(json.dumps({"cells": cells, "step": 3}) if cells else "{trunc")
    removed = resume.prune_finished_checkpoints(str(tmp_path), {"a", "b", "c"}.__contains__)
    assert removed == [os.path.join(root, "done")]
    assert sorted(os.listdir(root)) == ["corrupt", "half"]

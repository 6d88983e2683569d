"""A sweep: cells of a grid trained in packs, recorded once each, resumable after any stop.

    launch.py       run_sweep(): one experiment's sweep in any role, edge extension, report
    loop.py         Sweep: cells from the oracle, packs to the engine, records to the ledger
    grid.py         the cells of a config and the keras-tuner grid oracle handing them out
    handout.py      oracle trials to packs: worker slots, reclaiming after a restart
    ledger.py       the per-cell terminal records: schema, exclusive writes, reading
    resume.py       what a restart needs: attempts, TensorBoard marks, packs in flight
    edges.py        grows the learning-rate grid until no optimum sits on its edge
    distributed.py  keras-tuner chief/worker mode: a chief serves the grid, workers train
    signals.py      SIGTERM as a flag the training loop polls; the CLI's exit codes
    progress.py     cells done, ETA per pack and overall (plain lines)
    summaries.py    TensorBoard: one run per cell (HParams session and curves)

Nothing is imported here, so the engine can use progress.py without loading a sweep.
"""

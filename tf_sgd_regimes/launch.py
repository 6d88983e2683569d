"""One experiment's sweep in any role, with edge extension: what `run.py` drives, callable
from a notebook as well.

    config, records = launch.run_sweep(config, workdir)                 # standalone
    config, records = launch.run_sweep(config, workdir, role="chief")

Errors are raised, not turned into exit codes (run.py does that): ConfigError,
DataMissingError, LedgerError (bad input), Preempted (SIGTERM, checkpoint saved),
DiskFullError.
"""

import os
from typing import List, Optional, Tuple

from tf_sgd_regimes import distributed
from tf_sgd_regimes import edges
from tf_sgd_regimes import ledger
from tf_sgd_regimes import signals
from tf_sgd_regimes import sweep as sweep_lib


class ChiefStopped(Exception):
    """The chief got SIGTERM before every cell had ended; re-running it goes on."""


def run_sweep(config, workdir: str, role: str = "standalone", tuner_id: Optional[str] = None,
              extend_edges: Optional[bool] = None) -> Tuple[object, List[dict]]:
    """Runs (or resumes) the sweep; returns the config (grown, if edges were extended) and
    the ledger's records.

    Args:
      config: a validated experiment config.
      workdir: the sweep's work directory (shared by a chief and its workers).
      role: "standalone", "chief" (serves the oracle, trains nothing) or "worker"
        (KERASTUNER_ORACLE_IP/PORT and KERASTUNER_TUNER_ID must be set).
      tuner_id: a standalone sweep's name in pack ids (default worker0).
      extend_edges: grow the learning-rate grid where an optimum sits on its edge
        (None: config.sweep.extend_edges.enabled). Workers never extend: the chief's
        grid is the one handed out.
    """
    # A grid grown by --extend_edges stays grown when the same command runs again.
    config = edges.with_recorded_extensions(config, workdir)
    if role == "chief":
        os.environ.setdefault(distributed.ENV_TUNER_ID, "chief")
        with signals.StopRequest() as stop:
            if not distributed.serve(config, workdir, should_stop=stop):
                raise ChiefStopped("chief stopped by SIGTERM; re-run it to go on")
        return config, ledger.read(workdir)
    oracle, tuner_id = None, tuner_id or "worker0"
    if role == "worker":
        distributed.role_from_env()  # checks the address and tuner id are set
        tuner_id = os.environ[distributed.ENV_TUNER_ID]
        oracle = distributed.worker_oracle(config, workdir)
    sweep = sweep_lib.Sweep(config, workdir, tuner_id=tuner_id, oracle=oracle)
    print(f"[run] {len(sweep.cells)} cells on {sweep.strategy.num_replicas_in_sync} "
          f"replica(s) as {role} {tuner_id}; progress every few seconds", flush=True)
    records = sweep.run()
    if extend_edges is None:
        extend_edges = edges.edge_settings(config).enabled
    if role != "worker" and extend_edges:
        def run_grown(grown):
            return sweep_lib.Sweep(grown, workdir, dataset=sweep.dataset,
                                   strategy=sweep.strategy).run()

        records = edges.extend_edges(config, workdir, run_grown, records=records)
        config = edges.with_recorded_extensions(config, workdir)
        print(f"[run] learning-rate grid edges: {edges.load(workdir)['status']} "
              f"({os.path.abspath(os.path.join(workdir, edges.EDGES_FILE))})", flush=True)
    return config, records

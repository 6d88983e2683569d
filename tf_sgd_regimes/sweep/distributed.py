"""Distributed tuning on keras-tuner's chief/worker mode: a chief serves the grid, workers train.

One chief process holds the grid oracle and answers workers over gRPC (keras-tuner's
OracleServicer and OracleClient); it trains nothing. Each worker pulls cells, forms
packs, trains them and writes records to the shared work directory (a file system every
machine mounts: NFS, GCS FUSE, a pod slice's shared disk). The ledger's exclusive
segment commits (ledger.Ledger.commit) keep one record per cell however workers race.

Processes find each other through keras-tuner's environment variables:
  KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT  the chief's address
  KERASTUNER_TUNER_ID                            "chief" for the chief, a stable unique
                                                 name per worker ("tuner0", "tuner1", ...)

A killed worker's cells stay assigned to it: restarted with the same KERASTUNER_TUNER_ID
it takes its trials back from the chief (keras-tuner returns a tuner id's ongoing trial)
and resumes its pack from the checkpoint in the shared work directory. The chief exits
once the oracle has handed out every cell and every handed-out cell has ended. A
restarted chief rebuilds the oracle from the ledger (cells with a record are skipped).
"""

import os
import sys
import time
from concurrent import futures
from typing import Callable, Optional

from tf_sgd_regimes import experiments
from tf_sgd_regimes.sweep import grid

ENV_IP = "KERASTUNER_ORACLE_IP"
ENV_PORT = "KERASTUNER_ORACLE_PORT"
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"


def role_from_env(environ=None) -> str:
    """keras-tuner's convention: an oracle address makes us distributed; "chief" in the
    tuner id makes us the chief."""
    environ = os.environ if environ is None else environ
    if ENV_IP not in environ:
        return "standalone"
    for name in (ENV_PORT, ENV_TUNER_ID):
        if name not in environ:
            raise experiments.ConfigError(
                f"{ENV_IP} is set but {name} is not: a distributed sweep needs the chief's "
                f"address ({ENV_IP}, {ENV_PORT}) and a tuner id per process ({ENV_TUNER_ID})")
    return "chief" if "chief" in environ[ENV_TUNER_ID] else "worker"


def set_address(address: str, tuner_id: str = "") -> None:
    """Sets keras-tuner's environment variables from "host:port" and a tuner id."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise experiments.ConfigError(f"--oracle_address={address!r}: expected HOST:PORT, "
                                      "e.g. 10.0.0.2:8000")
    os.environ[ENV_IP], os.environ[ENV_PORT] = host, port
    if tuner_id:
        os.environ[ENV_TUNER_ID] = tuner_id


def worker_oracle(config, workdir: str):
    """A keras-tuner OracleClient talking to the chief named in the environment."""
    from keras_tuner.src.distribute import oracle_client

    # The local oracle only supplies the objective; it never writes files.
    local = grid.make_oracle(config, os.path.join(workdir, "keras_tuner"))
    return oracle_client.OracleClient(local)


def serve(config, workdir: str, linger_s: float = 5.0, poll_s: float = 0.5,
          should_stop: Optional[Callable[[], bool]] = None, stream=None) -> bool:
    """Runs the chief: serves the grid until every cell has ended.

    keras-tuner's own `oracle_chief.start_server` waits until every tuner id it ever saw
    has been told to stop; our workers use one id per pack slot, so we reuse its
    OracleServicer with our own loop: stop once the oracle has said STOPPED (grid handed
    out, nothing in flight), after `linger_s` so idle workers hear it too.

    Returns:
      True when the grid finished, False if should_stop (SIGTERM) ended serving early.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    from tf_sgd_regimes.sweep import loop as sweep_lib

    stream = stream or sys.stdout
    experiments.validate(config)
    sweep_lib.prepare_workdir(workdir, config)
    tuner_dir = os.path.join(workdir, "keras_tuner")
    grid.reset_tuner_state(tuner_dir, report=lambda text: print(text, file=stream, flush=True))
    oracle = grid.make_oracle(config, tuner_dir)
    address = f"{os.environ[ENV_IP]}:{os.environ[ENV_PORT]}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise experiments.ConfigError(f"the chief cannot listen on {address} (in use?)")
    server.start()
    print(f"[chief] serving the grid on {address}", file=stream, flush=True)
    finished_at = None
    # A full collection walking TensorFlow's heap (0.3 s each in a standalone sweep)
    # would hold up every worker's request meanwhile (sweep_lib.frozen_heap).
    with sweep_lib.frozen_heap() as refreeze:
        try:
            while True:
                time.sleep(poll_s)
                refreeze()  # the trials served since: out of the next full collections
                if should_stop is not None and should_stop():
                    return False
                if servicer.stop_triggered and not oracle.ongoing_trials:
                    finished_at = finished_at or time.monotonic()
                    if time.monotonic() - finished_at >= linger_s:
                        print("[chief] every cell has ended", file=stream, flush=True)
                        return True
        finally:
            server.stop(grace=1.0)
            try:
                oracle.flush()  # its last state (saved only now and then while serving)
            except OSError as e:
                print(f"[chief] warning: keras-tuner state not saved ({e})", file=stream,
                      flush=True)

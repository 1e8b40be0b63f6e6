"""The agent process the launcher starts: ``elastic_launch`` (torchrun's engine) runs the workers.

Kept out of the package ``__init__`` so ``python -m`` runs it without importing it twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

_WATCH_S = 0.5


def _die_with_parent(job_path: str) -> None:
    """Kill this launcher's session (itself and every worker) once the caller is gone.

    A notebook kernel that is killed, or exits while a run is in a background thread, cannot
    reap its launcher or remove the run's temporary folder; without this the workers would run
    until their own timeout. A folder the user chose (``workdir``) is kept.
    """
    parent = os.getppid()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_S)
        if job.get("private_dir"):
            shutil.rmtree(job["out_dir"], ignore_errors=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="fw-die-with-parent", daemon=True).start()


def main(job_path: str, nproc: int) -> int:
    """In the agent process: run the workers with elastic_launch (torchrun's engine)."""
    _die_with_parent(job_path)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from freeze_widgets.distributed.worker import run_from_file

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # like torchrun --standalone: a free local port
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        shutdown_timeout=5,
    )
    start = time.time()
    try:
        elastic_launch(config, run_from_file)(job_path)
    except ChildFailedError as exc:
        failures = {
            str(rank): {
                "exitcode": f.exitcode,
                "signal": f.signal_name(),
                "message": f.message,
                "time": f.timestamp or start,
            }
            for rank, f in exc.failures.items()
        }
        out = Path(job_path).parent
        (out / "failure.json").write_text(json.dumps(failures), encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))

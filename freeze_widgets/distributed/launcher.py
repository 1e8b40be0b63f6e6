"""Starting the workers through PyTorch's elastic launcher, bounded in time, leaving nothing behind.

The caller starts ``python -m freeze_widgets.distributed.agent JOB N`` in a new session; that
process runs ``torch.distributed.launcher.api.elastic_launch`` (what torchrun runs), which
spawns the workers in the same session. A timeout or an interrupt kills the whole session and
any descendant that left it, so no worker survives. The elastic agent needs the main thread of
its process for signal handlers: a separate process also lets a notebook's background thread
start a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freeze_widgets.distributed.errors import DistributedRunError
from freeze_widgets.distributed.job import JobConfig
from freeze_widgets.distributed.progress import STOP_FILE, ProgressTail

__all__ = ["launch", "reap"]

_LOG_TAIL_LINES = 30


def _children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (Linux) or psutil."""
    tree: dict[int, list[int]] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
        return tree
    import psutil

    for p in psutil.process_iter(["pid", "ppid"]):
        tree.setdefault(p.info["ppid"], []).append(p.info["pid"])
    return tree


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    tree, out, todo = _children_of(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill the launcher's session and every descendant (some may have left the session)."""
    pids = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _log_tail(out: Path) -> str:
    lines: list[str] = []
    for name in ("launcher.err", "launcher.out"):
        path = out / name
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines)


def _failure_error(out: Path, returncode: int) -> DistributedRunError:
    """One readable error naming the rank that failed first and why."""
    errors = [json.loads(p.read_text()) for p in sorted(out.glob("error_rank*.json"))]
    failed: dict[str, Any] = {}
    if (out / "failure.json").exists():
        failed = json.loads((out / "failure.json").read_text())
    tail = _log_tail(out)
    # A rank killed by a signal wrote no error file; the others then fail in collectives.
    killed = [
        (int(r), f) for r, f in failed.items() if f["exitcode"] < 0 and f["signal"] != "SIGTERM"
    ]
    if killed:
        rank, info = min(killed)
        cause = f"killed by signal {info['signal']} (exit code {info['exitcode']})"
    elif errors:
        first = min(errors, key=lambda e: e["time"])
        rank, cause = first["rank"], f"{first['type']}: {first['message']}"
    elif failed:
        rank, info = min((int(r), f) for r, f in failed.items())
        cause = f"exit code {info['exitcode']}: {info['message']}"
    else:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        return DistributedRunError(
            f"the launcher failed (exit code {returncode}): {last}",
            rank=None,
            cause=last,
            log_tail=tail,
        )
    return DistributedRunError(
        f"distributed worker rank {rank} failed: {cause}. All workers were stopped; "
        "see .log_tail for the output.",
        rank=rank,
        cause=cause,
        log_tail=tail,
    )


_POLL_S = 0.2
# After Stop, the ranks stop together at their next step and the run ends normally; a run that
# has not ended this long after Stop (a rank stuck in data loading or a collective) is killed.
_STOP_GRACE_S = 20.0
# Runs whose owner went away (abort): killed at once instead of at a step boundary.
_ABORTED: weakref.WeakSet[threading.Event] = weakref.WeakSet()


def abort(stop: threading.Event) -> None:
    """Kill the run that watches ``stop`` now, leaving the model as it was (its owner closed).

    Stop (``stop.set()``) ends a run at a step boundary and keeps what was trained; an explorer
    that closes cannot wait for that, so it aborts: every process of the run is killed within a
    poll (a fraction of a second) and nothing is kept.
    """
    _ABORTED.add(stop)
    stop.set()


def _wait(
    proc: subprocess.Popen[bytes],
    out: Path,
    timeout_s: float,
    on_progress: Callable[[dict[str, Any]], None] | None,
    stop: threading.Event | None,
) -> int:
    """The launcher's exit code; rank 0's progress lines go on, Stop touches the stop file.

    Raises:
        DistributedRunError: past ``timeout_s``, or the run did not end within
            ``_STOP_GRACE_S`` of Stop (every process is killed first).
    """
    tail = ProgressTail(out) if on_progress is not None else None
    deadline = time.monotonic() + timeout_s
    stop_deadline: float | None = None
    while True:
        try:
            return _wait_once(proc, deadline, tail, on_progress)
        except subprocess.TimeoutExpired:
            pass
        if stop is not None and stop.is_set() and stop_deadline is None:
            (out / STOP_FILE).touch()  # every rank sees it at its next step
            stop_deadline = time.monotonic() + (0.0 if stop in _ABORTED else _STOP_GRACE_S)
        if stop_deadline is not None and time.monotonic() >= stop_deadline:
            reap(proc)
            raise DistributedRunError(
                "the distributed run was stopped: all workers were killed, and the model was "
                "left as it was before the run (a run that is closed, or does not reach a step "
                f"boundary within {_STOP_GRACE_S:g} s of Stop, keeps nothing part-way)",
                rank=None,
                cause="stopped",
                log_tail=_log_tail(out),
            )
        if time.monotonic() >= deadline:
            reap(proc)
            raise DistributedRunError(
                f"the distributed run did not finish within timeout_s={timeout_s:g} s; all "
                "workers were killed. Raise timeout_s or train fewer steps.",
                rank=None,
                cause="timeout",
                log_tail=_log_tail(out),
            )


def _wait_once(
    proc: subprocess.Popen[bytes],
    deadline: float,
    tail: ProgressTail | None,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> int:
    """One poll: the exit code, or TimeoutExpired; new progress lines are passed on first."""
    left = max(0.0, min(_POLL_S, deadline - time.monotonic()))
    try:
        return proc.wait(timeout=left)
    finally:
        if tail is not None and on_progress is not None:
            for line in tail.read():
                on_progress(line)


def launch(
    job: JobConfig,
    nproc: int,
    timeout_s: float,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run ``job`` in ``nproc`` local workers; return rank 0's merged report as a dict.

    With ``on_progress`` or ``stop``, the workers stream rank 0's steps (``job.live``): each
    line (step, total, epoch, loss, acc, elapsed) goes to ``on_progress`` in this thread, and
    setting ``stop`` makes every rank stop at the same step, a step or two later (the report
    says so, and keeps what was trained). A run that does not end soon after Stop is killed.

    Raises:
        DistributedRunError: a worker failed, the run took longer than ``timeout_s``, or
            ``stop`` was set (``cause`` is ``"timeout"`` / ``"stopped"`` for those two).
    """
    job.live = job.live or on_progress is not None or stop is not None
    out = Path(job.out_dir)
    job_path = out / "job.json"
    job.save(job_path)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH", "")])])
    # torchelastic's own temporary folders (torchelastic_*, left behind by a killed run) go
    # into the run's folder, never into the system's /tmp.
    env["TMPDIR"] = str(out)
    cmd = [sys.executable, "-m", "freeze_widgets.distributed.agent", str(job_path), str(nproc)]
    with open(out / "launcher.out", "wb") as so, open(out / "launcher.err", "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, start_new_session=True)
    try:
        returncode = _wait(proc, out, timeout_s, on_progress, stop)
    finally:
        if proc.poll() is None:  # an interrupt (KeyboardInterrupt), a timeout or a stop
            reap(proc)
    leftovers = descendants(proc.pid)
    if leftovers:
        reap(proc)
    if returncode != 0 or not (out / "result.json").exists():
        raise _failure_error(out, returncode)
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    return result

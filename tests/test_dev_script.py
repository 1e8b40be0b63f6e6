"""The README's run command (``bash tools/dev.sh lab``) accepts the usual JupyterLab options.

It once passed the quickstart as a file argument, which JupyterLab refuses beside
``--ServerApp.root_dir`` ("root_dir and file_to_run are incompatible"). Both forms are started
for real on 127.0.0.1 and asked where ``/`` leads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .browser_harness import free_port

REPO = Path(__file__).resolve().parents[1]


def _where_root_leads(extra: list[str], tmp_path: Path) -> str:
    port = free_port()
    env = {
        **os.environ,
        "FREEZE_WIDGETS_SKIP_SETUP": "1",
        "FREEZE_WIDGETS_VENV": sys.prefix,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    args = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--IdentityProvider.token=t", *extra]  # fmt: skip
    if os.geteuid() == 0:
        args.append("--allow-root")
    proc = subprocess.Popen(
        ["bash", str(REPO / "tools" / "dev.sh"), "lab", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        return _first_redirect(f"http://127.0.0.1:{port}/?token=t", proc)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _first_redirect(url: str, proc: subprocess.Popen[bytes]) -> str:
    opener = urllib.request.build_opener(_NoRedirect)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"dev.sh lab exited with {proc.returncode}:\n{out[-2000:]}")
        try:
            opener.open(url, timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302):
                return str(exc.headers["Location"])
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("JupyterLab did not answer within 90 s")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_lab_opens_the_quickstart_and_accepts_root_dir(tmp_path: Path) -> None:
    assert _where_root_leads([], tmp_path / "a").startswith("/lab/tree/notebooks/00_quickstart")
    root = tmp_path / "elsewhere"
    root.mkdir()
    assert _where_root_leads([f"--ServerApp.root_dir={root}"], tmp_path / "b").startswith("/lab")

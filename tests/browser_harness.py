"""Run JupyterLab and a headless Chromium for end-to-end tests (DESIGN.md section 5).

:func:`lab_browser` starts JupyterLab on 127.0.0.1 (free port, random token, temporary
JUPYTER_CONFIG_DIR / RUNTIME / DATA, settings and workspaces dirs, a temporary copy of the
notebooks as ``root_dir``), waits for ``/api/status``, launches Debian's Chromium through
Playwright and yields a :class:`LabSession`. On exit, also on failure, it saves a screenshot
and the browser console log, closes the browser, shuts the server down and kills anything
it started that is still alive (kernels run in their own sessions, so killing the server's
process group is not enough).

The helpers below it drive a notebook the way a person does: open it, wait for the kernel,
Run > Run All Cells from the menu, wait until every code cell has run.

Used by ``tests/test_browser.py`` and ``benchmarks/bench_browser.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = Path(os.environ.get("FREEZE_WIDGETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_TIMEOUT_S = 60.0


def artifacts_root() -> Path:
    """Where screenshots and logs go: ``$FREEZE_WIDGETS_ARTIFACTS`` or ``test-artifacts/``."""
    return Path(os.environ.get("FREEZE_WIDGETS_ARTIFACTS") or REPO / "test-artifacts")


def browser_missing_reason() -> str | None:
    """Why the browser test cannot run here, or None if Chromium and Playwright are present."""
    if not CHROMIUM.exists():
        return (
            f"Chromium not found at {CHROMIUM}: run `bash tools/dev.sh test`, which installs "
            "Debian's chromium package (never `playwright install`)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: run `bash tools/dev.sh setup`"
    return None


def require_browser() -> None:
    """Fail (or skip with FREEZE_WIDGETS_SKIP_BROWSER=1) when the browser test cannot run."""
    import pytest

    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("FREEZE_WIDGETS_SKIP_BROWSER", "").lower() in {"1", "true", "yes"}:
        pytest.skip(f"FREEZE_WIDGETS_SKIP_BROWSER is set; {reason}")
    pytest.fail(reason + " (or set FREEZE_WIDGETS_SKIP_BROWSER=1 to skip)", pytrace=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LabSession:
    """A running JupyterLab + Chromium page. Unpacks as ``page, base_url, artifacts_dir``."""

    page: Any  # playwright.sync_api.Page
    base_url: str
    token: str
    root_dir: Path
    out_dir: Path
    artifacts_dir: Path
    server_log: Path
    console: list[str] = field(default_factory=list)
    _shots: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.page, self.base_url, self.artifacts_dir))

    def url(self, path: str) -> str:
        """``base_url + path`` with the token appended."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a numbered screenshot ``NN-name.png`` in the artifacts dir."""
        self._shots += 1
        path = self.artifacts_dir / f"{self._shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def server_log_tail(self, lines: int = 60) -> str:
        try:
            text = self.server_log.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _write_settings(settings_dir: Path) -> None:
    """User settings that keep dialogs and toasts from covering what the test clicks."""
    settings = {
        # "Would you like to get notified about official Jupyter news?" toast.
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for plugin, values in settings.items():
        package, name = plugin.rsplit("/", 1)
        folder = settings_dir / package
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


def _wait_for_server(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {proc.returncode} before answering; log:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"JupyterLab did not answer {url} within {timeout:.0f} s ({last}); log:\n"
        + log.read_text(errors="replace")[-4000:]
    )


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:  # psutil missing or the process already gone
        return []


def _stop_server(proc: subprocess.Popen[bytes], base_url: str, token: str) -> None:
    """Shut down JupyterLab and its kernels; escalate to SIGTERM / SIGKILL if needed."""
    children = _descendants(proc.pid)  # kernels: own sessions, not in the server's group
    if proc.poll() is None:
        # Graceful first: the server shuts its kernels down (and their netron threads).
        req = urllib.request.Request(f"{base_url}/api/shutdown?token={token}", method="POST")
        with contextlib.suppress(Exception):
            urllib.request.urlopen(req, timeout=5).close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    for child in children:
        with contextlib.suppress(Exception):
            if child.is_running():
                child.terminate()
    for child in children:
        with contextlib.suppress(Exception):
            child.wait(timeout=5)
        with contextlib.suppress(Exception):
            if child.is_running():
                child.kill()


@contextlib.contextmanager
def lab_browser(
    notebooks: Iterable[Path] = (),
    *,
    name: str = "e2e",
    env: dict[str, str] | None = None,
    viewport: tuple[int, int] = (1400, 1000),
    keep_tmp: bool = False,
) -> Iterator[LabSession]:
    """JupyterLab on a temporary copy of ``notebooks`` plus a Chromium page, always cleaned up.

    Args:
        notebooks: Notebook files copied into the server's root dir (the repo is never served,
            so nothing the notebooks write lands in it).
        name: Sub-folder of the artifacts dir for this session's screenshots and logs.
        env: Extra environment for the server and its kernels. ``FREEZE_WIDGETS_OFFLINE=1``
            and ``FREEZE_WIDGETS_OUT`` (a temp dir) are always set.
        viewport: Browser viewport size.
        keep_tmp: Keep the temporary dir (for debugging).

    Yields:
        A :class:`LabSession`.
    """
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="fw-lab-"))
    root = tmp / "root"
    out_dir = tmp / "out"
    settings_dir = tmp / "settings"
    for d in (root, out_dir, settings_dir, tmp / "workspaces", tmp / "config", tmp / "data"):
        d.mkdir(parents=True)
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700)
    for nb in notebooks:
        shutil.copy2(nb, root / Path(nb).name)
    _write_settings(settings_dir)
    artifacts = artifacts_root() / name
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*.png"):
        old.unlink()

    port = free_port()
    token = secrets.token_hex(16)
    base_url = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "FREEZE_WIDGETS_OFFLINE": "1",
        "FREEZE_WIDGETS_OUT": str(out_dir),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        f"--LabApp.user_settings_dir={settings_dir}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    server_log = artifacts / "jupyterlab.log"
    proc: subprocess.Popen[bytes] | None = None
    pw = browser = None
    session: LabSession | None = None
    failed = False
    with open(server_log, "wb") as log_file:
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=root,
                env=server_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one on exit
            )
            _wait_for_server(
                f"{base_url}/api/status?token={token}", proc, server_log, SERVER_START_TIMEOUT_S
            )
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            page = context.new_page()
            session = LabSession(page, base_url, token, root, out_dir, artifacts, server_log)
            console = session.console
            page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
            page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
            yield session
        except BaseException:
            failed = True
            raise
        finally:
            if session is not None:
                if failed:
                    with contextlib.suppress(Exception):
                        session.page.screenshot(
                            path=str(artifacts / "failure.png"), full_page=True, timeout=10_000
                        )
                    print(f"\n--- JupyterLab log (tail) ---\n{session.server_log_tail()}")
                with contextlib.suppress(Exception):
                    (artifacts / "browser-console.log").write_text("\n".join(session.console))
            if browser is not None:
                with contextlib.suppress(Exception):
                    browser.close()
            if pw is not None:
                with contextlib.suppress(Exception):
                    pw.stop()
            if proc is not None:
                _stop_server(proc, base_url, token)
            if not keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- notebook helpers


def open_notebook(session: LabSession, name: str, *, timeout_s: float = 90) -> None:
    """Open ``name`` (relative to the root dir) and wait until its kernel is idle."""
    page = session.page
    page.goto(session.url(f"/lab/tree/{name}"), wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_s * 1000
    )


def run_all_cells(session: LabSession) -> float:
    """Run > Run All Cells through the menu bar; returns the time of the click."""
    page = session.page
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
    item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first
    item.wait_for(state="visible", timeout=10_000)
    start = time.perf_counter()
    item.click()
    return start


def cell_errors(session: LabSession) -> list[str]:
    """Text of every error output shown in the notebook."""
    texts: list[str] = session.page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
    ).all_inner_texts()
    return texts


def wait_all_cells_done(session: LabSession, *, timeout_s: float = 150) -> None:
    """Wait until every code cell shows an execution count and the kernel is idle.

    Raises:
        AssertionError: a cell shows an error output (its text included), or the timeout.
    """
    page = session.page
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        errors = cell_errors(session)
        if errors:
            raise AssertionError("a notebook cell failed in the browser:\n" + errors[0][-3000:])
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        done = prompts and all(re.search(r"\[\d+\]", p) for p in prompts)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if done and idle:
            return
        time.sleep(0.25)
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    raise AssertionError(
        f"cells still running after {timeout_s:.0f} s; prompts: {[p.strip() for p in prompts]}"
    )

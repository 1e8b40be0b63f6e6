"""Run JupyterLab and a headless Chromium for end-to-end tests (docs/design.md, section 5).

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
_EXTERNAL = re.compile(r"^(https?|wss?)://(?!(127\.0\.0\.1|localhost)[:/])")
# The only page errors a browser test tolerates: Netron's page reports analytics and checks for
# updates on the internet, which this machine's closed network (and our route blocking) refuses.
ALLOWED_PAGE_ERRORS = [
    re.compile(r"google-analytics|googletagmanager|gtag|analytics", re.IGNORECASE),
    re.compile(r"api\.github\.com|github\.com/lutzroeder", re.IGNORECASE),
    re.compile(r"Failed to fetch|NetworkError|net::ERR_FAILED|ERR_INTERNET_DISCONNECTED"),
    # Notebook 7.6's own document model, while a notebook it just opened runs all its cells
    # (stack inside static/notebook/notebook_core*.js, after "[yjs#509] Not same Y.Doc"); it does
    # not happen with a one-cell notebook and is not raised by any widget code.
    re.compile(r"reading 'schema'\) @ at \S+/static/notebook/notebook_core\."),
]


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

    def unexpected_page_errors(self) -> list[str]:
        """Uncaught page errors, less the known harmless ones (ALLOWED_PAGE_ERRORS)."""
        return [
            line
            for line in self.console
            if line.startswith("[pageerror]")
            and not any(p.search(line) for p in ALLOWED_PAGE_ERRORS)
        ]

    def server_log_tail(self, lines: int = 60) -> str:
        try:
            text = self.server_log.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


DARK_THEME = {"@jupyterlab/apputils-extension/themes": {"theme": "JupyterLab Dark"}}


def _write_settings(settings_dir: Path, extra: dict[str, dict[str, Any]] | None = None) -> None:
    """User settings that keep dialogs and toasts from covering what the test clicks.

    ``extra`` adds plugin settings (``{"plugin-id/name": {...}}``), e.g. :data:`DARK_THEME`.
    """
    settings: dict[str, dict[str, Any]] = {
        # "Would you like to get notified about official Jupyter news?" toast.
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        **(extra or {}),
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


def _page_error_line(exc: Any) -> str:
    """One console line for an uncaught page error, with the top of its stack (where it came from)."""
    stack = " | ".join((getattr(exc, "stack", "") or "").splitlines()[1:4])
    return f"[pageerror] {exc}" + (f" @ {stack.strip()}" if stack else "")


def _server_command(
    app: str, port: int, token: str, root: Path, tmp: Path, settings_dir: Path
) -> list[str]:
    """The command line of a JupyterLab, Notebook 7 or Voila server on 127.0.0.1:``port``."""
    if app == "voila":
        return [
            sys.executable, "-m", "voila", "--no-browser", "--Voila.ip=127.0.0.1",
            f"--Voila.port={port}", "--Voila.port_retries=0", f"--Voila.token={token}",
            f"--Voila.root_dir={root}", str(root),
        ]  # fmt: skip
    apps = {"lab": ("jupyterlab", "LabApp"), "notebook": ("notebook", "JupyterNotebookApp")}
    if app not in apps:
        raise ValueError(f"app must be 'lab', 'notebook' or 'voila'; got {app!r}")
    module, config = apps[app]
    cmd = [
        sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--{config}.workspaces_dir={tmp / 'workspaces'}",
        f"--{config}.user_settings_dir={settings_dir}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port`` (no HTTP request)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {proc.returncode}; log:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:  # psutil missing or the process already gone
        return []


def _stop_server(
    proc: subprocess.Popen[bytes], base_url: str, token: str, *, graceful: bool = True
) -> None:
    """Shut down the server and its kernels; escalate to SIGTERM / SIGKILL if needed."""
    children = _descendants(proc.pid)  # kernels: own sessions, not in the server's group
    if proc.poll() is None and not graceful:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
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
def lab_browser(  # noqa: C901, PLR0912, PLR0915 (set-up, yield, clean-up: one lifetime, read whole)
    notebooks: Iterable[Path] = (),
    *,
    name: str = "e2e",
    env: dict[str, str] | None = None,
    viewport: tuple[int, int] = (1400, 1000),
    block_external: bool = True,
    keep_tmp: bool = False,
    app: str = "lab",
    extra_settings: dict[str, dict[str, Any]] | None = None,
) -> Iterator[LabSession]:
    """JupyterLab on a temporary copy of ``notebooks`` plus a Chromium page, always cleaned up.

    Args:
        notebooks: Notebook files copied into the server's root dir (the repo is never served,
            so nothing the notebooks write lands in it).
        name: Sub-folder of the artifacts dir for this session's screenshots and logs.
        env: Extra environment for the server and its kernels. ``FREEZE_WIDGETS_OFFLINE=1``
            and ``FREEZE_WIDGETS_OUT`` (a temp dir) are always set.
        viewport: Browser viewport size.
        block_external: Abort requests to hosts other than 127.0.0.1/localhost (Netron's page
            asks ipinfo.io and analytics; offline they would only time out).
        keep_tmp: Keep the temporary dir (for debugging).
        app: ``"lab"`` (JupyterLab), ``"notebook"`` (Notebook 7) or ``"voila"``. Voila starts a
            kernel for every page request, so its readiness is a TCP connect, never an HTTP poll.
        extra_settings: More JupyterLab user settings by plugin id, written before the server
            starts (for example :data:`DARK_THEME`).

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
    _write_settings(settings_dir, extra_settings)
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
    cmd = _server_command(app, port, token, root, tmp, settings_dir)
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
            if app == "voila":
                _wait_for_port(port, proc, server_log, SERVER_START_TIMEOUT_S)
            else:
                _wait_for_server(
                    f"{base_url}/api/status?token={token}", proc, server_log, SERVER_START_TIMEOUT_S
                )
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            if block_external:
                context.route(_EXTERNAL, lambda route: route.abort())
            page = context.new_page()
            session = LabSession(page, base_url, token, root, out_dir, artifacts, server_log)
            console = session.console
            page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
            page.on("pageerror", lambda exc: console.append(_page_error_line(exc)))
            yield session
            errors = session.unexpected_page_errors()
            assert not errors, "uncaught errors in the page:\n" + "\n".join(errors)
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
                _stop_server(proc, base_url, token, graceful=app != "voila")
            if not keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- notebook helpers


_NOTEBOOK_READY_JS = """
(expected) => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return 'no notebook panel';
  const cells = panel.querySelectorAll('.jp-Notebook .jp-Cell').length;
  if (cells < expected) return `${cells}/${expected} cells`;
  const kernel = panel.querySelector('.jp-KernelName');
  if (!kernel || /no kernel/i.test(kernel.textContent)) return 'no kernel yet';
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const status = indicator ? indicator.getAttribute('data-status') : null;
  if (status !== 'idle') return `kernel ${status}`;
  return 'ready';
}
"""


def open_notebook(session: LabSession, name: str, *, timeout_s: float = 120) -> None:
    """Open ``name`` (relative to the root dir); wait for all its cells and an idle kernel.

    The execution indicator reads "idle" while the notebook is still a one-cell placeholder with
    no kernel; running cells then opens a blocking "Select Kernel" dialog. So this waits for the
    notebook's cells, a kernel name in the toolbar and "idle", seen twice 0.5 s apart.
    """
    import nbformat

    expected = len(nbformat.read(session.root_dir / name, as_version=4).cells)
    page = session.page
    page.goto(session.url(f"/lab/tree/{name}"), wait_until="domcontentloaded")
    deadline = time.monotonic() + timeout_s
    ready_since: float | None = None
    state = "not loaded"
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the page may still be navigating
            state = page.evaluate(_NOTEBOOK_READY_JS, expected)
        if state == "ready":
            ready_since = ready_since or time.monotonic()
            if time.monotonic() - ready_since >= 0.5:
                return
        else:
            ready_since = None
        time.sleep(0.1)
    raise AssertionError(f"notebook {name} not ready after {timeout_s:.0f} s: {state}")


def run_all_cells(session: LabSession) -> float:
    """Run > Run All Cells through the menu bar; returns the time of the click."""
    page = session.page
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
    item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first
    item.wait_for(state="visible", timeout=10_000)
    start = time.perf_counter()
    item.click()
    # Should not happen after open_notebook; if it does, say so and go on as a person would.
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    with contextlib.suppress(Exception):
        dialog.wait_for(state="visible", timeout=1500)
    if dialog.count() and dialog.first.is_visible():
        session.console.append("[harness] 'Select Kernel' dialog after Run All; accepted")
        print("warning: JupyterLab asked to select a kernel after Run All; accepting")
        dialog.locator(".jp-mod-accept").first.click()
    return start


def cell_errors(session: LabSession) -> list[str]:
    """Text of every error output shown in the notebook."""
    # textContent, not innerText: cells scrolled out of view (content-visibility) have no innerText.
    texts: list[str] = session.page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
    ).all_text_contents()
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
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
        done = prompts and all(re.search(r"\[\d+\]", p) for p in prompts)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if done and idle:
            return
        time.sleep(0.25)
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
    raise AssertionError(
        f"cells still running after {timeout_s:.0f} s; prompts: {[p.strip() for p in prompts]}"
    )


# --------------------------------------------------------------------------- explorer helpers

_WATCH_HEADER_JS = """
(header) => {
  const value = () => {
    const el = header.querySelector('.fw-trainable');
    return el ? el.getAttribute('data-value') : null;
  };
  const rec = { start: value(), click: null, update: null, value: null };
  window.__fwLatency = rec;
  const onClick = (event) => {
    if (rec.click === null && event.target.closest && event.target.closest('.fw-check')) {
      rec.click = performance.now();
    }
  };
  document.addEventListener('click', onClick, { capture: true });
  const observer = new MutationObserver(() => {
    const v = value();
    if (rec.update === null && v !== null && v !== rec.start) {
      rec.update = performance.now();
      rec.value = v;
      observer.disconnect();
      document.removeEventListener('click', onClick, { capture: true });
    }
  });
  observer.observe(header, { subtree: true, childList: true, attributes: true,
                             characterData: true });
  return rec.start;
}
"""


@dataclass(frozen=True)
class HeaderChange:
    """Trainable count before/after a click and the click-to-header latency in the browser."""

    before: int
    after: int
    latency_ms: float


def header_value(explorer: Any, cls: str = "fw-trainable") -> int:
    """The integer ``data-value`` of a header count (``fw-trainable``, ``fw-frozen``, ...)."""
    raw = explorer.locator(f".fw-header .{cls}").first.get_attribute("data-value")
    if raw is None:
        raise AssertionError(f"header element .{cls} has no data-value attribute")
    return int(raw)


def click_and_time_header(
    session: LabSession, explorer: Any, target: Any, *, timeout_s: float = 30
) -> HeaderChange:
    """Click ``target`` (a row's checkbox) and time click -> trainable count changed in the DOM.

    Both instants are taken inside the page (``performance.now()`` in a capturing click listener
    and in a MutationObserver on the header), so Playwright's own overhead is not counted.
    """
    header = explorer.locator(".fw-header").first
    start = header.evaluate(_WATCH_HEADER_JS)
    if start is None:
        raise AssertionError("the explorer header shows no .fw-trainable[data-value]")
    target.click()
    try:
        session.page.wait_for_function(
            "() => window.__fwLatency && window.__fwLatency.update !== null",
            timeout=timeout_s * 1000,
        )
    except Exception as exc:
        raise AssertionError(
            f"the header's trainable count ({start}) did not change within {timeout_s:.0f} s of "
            "the click"
        ) from exc
    rec = session.page.evaluate("() => window.__fwLatency")
    latency = float(rec["update"] - rec["click"]) if rec["click"] is not None else float("nan")
    return HeaderChange(int(start), int(rec["value"]), latency)


def netron_node_count(session: LabSession, iframe: Any, *, timeout_s: float = 60) -> int:
    """Wait until Netron in ``iframe`` drew its graph (accepting its cookie notice); count nodes.

    Netron (9.x) renders the graph as SVG inside ``#canvas``; each operator is a ``g.node``.
    Before loading a model it shows a consent notice with a ``#message-button`` to click.
    """
    handle = iframe.element_handle(timeout=timeout_s * 1000)
    frame = handle.content_frame() if handle is not None else None
    if frame is None:
        raise AssertionError("the Netron iframe has no content frame")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            button = frame.locator("#message-button")
            if button.is_visible():
                button.click(timeout=5000)
        count: int = frame.locator("#canvas g.node").count()
        if count > 0:
            return count
        time.sleep(0.25)
    text = ""
    with contextlib.suppress(Exception):
        text = frame.locator("body").inner_text(timeout=2000)[:500]
    raise AssertionError(
        f"Netron drew no graph nodes within {timeout_s:.0f} s (frame url {frame.url}); page text: "
        f"{text!r}"
    )


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """Just the browser (no JupyterLab), for tests that load pages of their own."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

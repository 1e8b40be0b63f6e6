"""The graph view in a real browser: netron inside the widget, fed over the comm (issue 18).

JupyterLab (light, with the page clock at 2027-05-01, past the date netron's stock page refuses
to load; and dark), Notebook 7 and Voila. Each checks that the graph draws (netron draws every
operator plus each graph input and output as a ``g.node``), that every request the page made
went to the Jupyter server's own origin, that there is no consent prompt, and that the frozen
overlay marks exactly the nodes reading a frozen parameter (computed from the torch model).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from .browser_explorer_helpers import write_notebook
from .browser_graph_helpers import (
    chain_model,
    expected_frozen_nodes,
    export_frozen_resnet,
    foreign_requests,
    frame_of,
    frozen_node_names,
    graph_contrast,
    onnx_node_count,
    wait_graph,
)
from .browser_harness import (
    DARK_THEME,
    LabSession,
    lab_browser,
    open_notebook,
    require_browser,
    run_all_cells,
    wait_all_cells_done,
)
from .test_browser_apps import _run_all_from_menu  # Notebook 7's menu, once the kernel is idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXPIRED = dt.datetime(2027, 5, 1, 12, 0, tzinfo=dt.UTC)  # netron 9.3.3's page: blank from 04-21


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_browser()
    folder = tmp_path_factory.mktemp("graph-models")
    resnet = folder / "resnet.onnx"
    model = export_frozen_resnet(resnet)
    chain = chain_model(folder / "chain" / "model.onnx", 5)
    text = folder / "notes.txt"
    text.write_text("these are notes, not a model\n" * 20)
    unsupported = folder / "weights.pt"  # an extension netron reads, content it cannot
    unsupported.write_bytes(bytes(range(256)) * 4)
    not_onnx = folder / "fake.onnx"
    not_onnx.write_text("not a model\n" * 20)
    program = folder / "small.pt2"  # torch.export: netron's PyTorch reader, sent whole
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(small, (torch.randn(1, 3, 8, 8),)), program)
    return {
        "pt2": program,
        "resnet": resnet,
        "frozen": expected_frozen_nodes(model, resnet),
        "chain": chain,
        "missing": folder / "missing.onnx",
        "text": text,
        "unsupported": unsupported,
        "not_onnx": not_onnx,
    }


def _cells(models: dict[str, Any], names: list[str]) -> list[str]:
    first = "from freeze_widgets import show_netron"
    return [first] + [f"show_netron({str(models[n])!r})" for n in names]


# The export panel's Netron button inside an explorer: clicking a node focuses its module's row.
EXPLORER_CELL = """\
import torch
from torchvision.models import resnet18
from freeze_widgets import FreezeExplorer, export_onnx, freeze
torch.manual_seed(0)
model = resnet18(weights=None).eval()
freeze(model, "layer1")
explorer = FreezeExplorer(model)
explorer.export.last_report = export_onnx(
    model, torch.randn(2, 3, 32, 32), {path!r}, verify=False
)
explorer.open_export.value = True
explorer.export.netron_button.click()
explorer
"""


def _requests(session: LabSession) -> list[str]:
    urls: list[str] = []
    session.page.on("request", lambda request: urls.append(request.url))
    return urls


def _check_resnet(session: LabSession, view: Any, models: dict[str, Any]) -> None:
    state = wait_graph(view)
    assert state["message"] == "" and state["error"] is None, state
    assert state["drawn"] == onnx_node_count(models["resnet"])
    frame = frame_of(view)
    assert frame.locator("#message-button").is_visible() is False  # no consent prompt
    assert "cookies" not in frame.locator("body").inner_text()
    expected = models["frozen"]
    assert len(expected) == 4  # layer1: two blocks of two convs
    assert frozen_node_names(view) == expected
    view.locator(".fw-graph-legend", has_text="frozen weights: 4 nodes").wait_for(timeout=5000)


def _run(session: LabSession, name: str) -> None:
    open_notebook(session, name)
    run_all_cells(session)
    wait_all_cells_done(session, timeout_s=240)


@pytest.mark.timeout(600)
def test_lab_light_expired_clock(models: dict[str, Any], tmp_path: Path) -> None:
    names = ["resnet", "chain", "missing", "text", "unsupported", "not_onnx", "pt2"]
    explorer_cell = EXPLORER_CELL.format(path=str(tmp_path / "explorer.onnx"))
    nb = write_notebook(tmp_path, "graphs.ipynb", [*_cells(models, names), explorer_cell])
    with lab_browser([nb], name="graph-lab") as lab:
        urls = _requests(lab)
        open_notebook(lab, "graphs.ipynb")
        # After the notebook rendered: JupyterLab's lazy cell rendering waits on faked timers.
        lab.page.clock.install(time=EXPIRED)
        run_all_cells(lab)
        wait_all_cells_done(lab, timeout_s=240)
        views = lab.page.locator(".fw-graph")
        resnet, chain = views.nth(0), views.nth(1)
        _check_resnet(lab, resnet, models)
        # netron's frame saw the expired date too (its stock page would refuse to load).
        assert frame_of(resnet).evaluate("() => new Date().getFullYear()") == 2027
        # Two views, two models: each draws its own (the old server's bug drew the last one).
        assert wait_graph(chain)["drawn"] == onnx_node_count(models["chain"])
        missing, text, unsupported, not_onnx = (
            wait_graph(views.nth(i))["message"] for i in (2, 3, 4, 5)
        )
        assert "no model file at" in missing and "missing.onnx" in missing
        assert text.startswith("Netron cannot show notes.txt: Unsupported file content"), text
        assert unsupported.startswith("Netron cannot show weights.pt: "), unsupported
        assert "does not read" not in unsupported  # netron tried, and says why it failed
        assert not_onnx.startswith("fake.onnx is not an ONNX model")
        program = wait_graph(views.nth(6))
        assert program["message"] == "" and program["drawn"] >= 3, program  # x, conv, relu, ...
        resnet.scroll_into_view_if_needed()
        contrast = graph_contrast(resnet)
        assert contrast and min(contrast.values()) >= 4.5, contrast
        lab.screenshot("graph-light", full_page=False)
        frame_of(resnet).locator("g.node.fw-state-frozen").first.click()
        info = resnet.locator(".fw-graph-info")
        info.wait_for(timeout=5000)
        assert "layer1." in info.inner_text() and "weights frozen" in info.inner_text()
        assert foreign_requests(urls, lab.base_url) == []
        views.nth(3).scroll_into_view_if_needed()
        lab.screenshot("graph-messages", full_page=False)
        _check_tree_focus(lab)


def _check_tree_focus(lab: LabSession) -> None:
    explorer = lab.page.locator(".fw-explorer").first
    view = explorer.locator(".fw-netron-view .fw-graph").first
    assert wait_graph(view)["drawn"], "the export panel's graph view drew nothing"
    view.scroll_into_view_if_needed()
    node = frame_of(view).locator("g.node.fw-state-frozen").first
    module = node.get_attribute("data-fw-module")
    assert module and module.startswith("layer1.")
    node.click()
    row = explorer.locator(f'.fw-tree .fw-row.fw-focus[data-path="{module}"]')
    row.wait_for(timeout=10_000)  # the tree expanded to the module and focused its row
    lab.screenshot("graph-in-explorer", full_page=False)


@pytest.mark.timeout(600)
def test_lab_dark_theme(models: dict[str, Any], tmp_path: Path) -> None:
    nb = write_notebook(tmp_path, "dark.ipynb", _cells(models, ["resnet"]))
    with lab_browser([nb], name="graph-dark", extra_settings=DARK_THEME) as lab:
        _run(lab, "dark.ipynb")
        view = lab.page.locator(".fw-graph").first
        _check_resnet(lab, view, models)
        assert "fw-dark" in (view.get_attribute("class") or "")
        contrast = graph_contrast(view)
        assert contrast and min(contrast.values()) >= 4.5, contrast
        lab.screenshot("graph-dark", full_page=False)


@contextlib.contextmanager
def _app_session(app: str, models: dict[str, Any], tmp_path: Path) -> Iterator[LabSession]:
    nb = write_notebook(tmp_path, "app.ipynb", _cells(models, ["resnet"]))
    with lab_browser([nb], name=f"graph-{app}", app=app) as session:
        yield session


@pytest.mark.timeout(600)
def test_notebook7(models: dict[str, Any], tmp_path: Path) -> None:
    with _app_session("notebook", models, tmp_path) as nb:
        urls = _requests(nb)
        nb.page.goto(nb.url("/notebooks/app.ipynb"), wait_until="domcontentloaded")
        nb.page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="attached", timeout=120_000)
        _run_all_from_menu(nb.page)
        _check_resnet(nb, nb.page.locator(".fw-graph").first, models)
        assert foreign_requests(urls, nb.base_url) == []
        nb.screenshot("graph-notebook7", full_page=False)


@pytest.mark.timeout(600)
def test_voila(models: dict[str, Any], tmp_path: Path) -> None:
    with _app_session("voila", models, tmp_path) as voila:
        seen: list[tuple[str, str, bool]] = []
        page = voila.page
        page.on(
            "request",
            lambda r: seen.append((r.url, r.resource_type, r.frame == page.main_frame)),
        )
        page.goto(
            voila.url("/voila/render/app.ipynb"), wait_until="domcontentloaded", timeout=300_000
        )
        _check_resnet(voila, page.locator(".fw-graph").first, models)
        foreign = foreign_requests([url for url, _, _ in seen], voila.base_url)
        # Voila's own page template links Font Awesome from a CDN (blocked offline); nothing
        # else, and nothing from the graph's frame, leaves the server's origin.
        template = {url for url, kind, main in seen if main and kind == "stylesheet"}
        assert set(foreign) <= template, foreign
        assert all("fontawesome" in url for url in foreign), foreign
        voila.screenshot("graph-voila", full_page=False)

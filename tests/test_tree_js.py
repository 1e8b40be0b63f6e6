"""The tree's ES module, loaded and rendered in real Chromium against a stand-in widget model.

No Jupyter here: a minimal model object (get / on / off / send) drives the module the way
anywidget does, so the view's behaviour (rows, tri-state, deltas, keyboard) is tested directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torchvision.models import resnet18

from freeze_widgets import ModuleTree
from freeze_widgets.ui.payload import delta_rows, tree_payload

from .browser_harness import launch_chromium

ESM = Path(__file__).resolve().parents[1] / "freeze_widgets" / "ui" / "tree.js"

HARNESS = """
async ([source, tree]) => {
  const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
  const mod = await import(url);
  const listeners = {};
  const state = {tree, visible: null, disabled: false};
  window.sent = [];
  window.model = {
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; (listeners["change:" + k] || []).forEach((f) => f()); },
    on: (e, f) => { (listeners[e] = listeners[e] || []).push(f); },
    off: (e, f) => { listeners[e] = (listeners[e] || []).filter((g) => g !== f); },
    send: (m) => window.sent.push(m),
    emit: (m) => (listeners["msg:custom"] || []).forEach((f) => f(m)),
  };
  const el = document.createElement("div");
  document.body.appendChild(el);
  mod.default.render({model: window.model, el});
  return typeof mod.default.render;
}
"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with launch_chromium() as browser:
        pg = browser.new_page()
        yield pg


@pytest.fixture
def loaded(page: Any) -> tuple[Any, ModuleTree]:
    tree = ModuleTree(resnet18())
    page.set_content("<html><body></body></html>")
    kind = page.evaluate(HARNESS, [ESM.read_text(), tree_payload(tree)])
    assert kind == "function"
    return page, tree


def rows(page: Any) -> list[str]:
    return page.eval_on_selector_all(".fw-row", "els => els.map(e => e.dataset.path)")


def test_module_loads_and_renders_collapsed(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    assert rows(page)[:3] == ["", "conv1", "bn1"]
    assert "layer1.0" not in rows(page)  # collapsed rows are not in the DOM
    assert page.text_content('.fw-row[data-path="layer1"] .fw-row-counts') == "147,968 / 147,968"
    assert page.text_content('.fw-row[data-path="layer1"] .fw-type') == "(Sequential)"
    assert page.evaluate("window.sent[0]") == {"type": "sync"}


def test_click_sends_tick_and_delta_updates_tri_state(loaded: tuple[Any, ModuleTree]) -> None:
    page, tree = loaded
    page.click('.fw-row[data-path="layer1"] .fw-caret')
    assert "layer1.0" in rows(page)
    page.click('.fw-row[data-path="layer1.0"] input.fw-check')
    assert page.evaluate("window.sent.at(-1)") == {
        "type": "tick",
        "path": "layer1.0",
        "frozen": True,
    }
    changed = tree.set_frozen("layer1.0", True)
    page.evaluate(
        "m => window.model.emit(m)", {"type": "delta", "u": delta_rows(changed), "seq": 1}
    )
    check = '.fw-row[data-path="{}"] input.fw-check'
    assert page.eval_on_selector(check.format("layer1.0"), "e => e.checked")
    assert page.eval_on_selector(check.format("layer1"), "e => e.indeterminate")
    assert not page.eval_on_selector(check.format("layer1"), "e => e.checked")
    assert page.get_attribute('.fw-row[data-path="layer1"]', "data-state") == "partial"
    assert page.text_content('.fw-row[data-path="layer1"] .fw-row-counts') == "73,984 / 147,968"
    # Ticking a frozen row sends an unfreeze.
    page.click(check.format("layer1.0"))
    assert page.evaluate("window.sent.at(-1)")["frozen"] is False


def test_keyboard_moves_expands_and_ticks(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    page.focus(".fw-tree-box")
    for key in ["ArrowDown", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowDown"]:
        page.keyboard.press(key)  # root -> conv1 -> bn1 -> relu -> maxpool -> layer1
    assert page.get_attribute(".fw-row.fw-focus", "data-path") == "layer1"
    page.keyboard.press("ArrowRight")
    assert "layer1.0" in rows(page)
    page.keyboard.press("ArrowLeft")
    assert "layer1.0" not in rows(page)
    page.keyboard.press(" ")
    assert page.evaluate("window.sent.at(-1)") == {"type": "tick", "path": "layer1", "frozen": True}


def test_filter_and_expand_all(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    page.evaluate("() => window.model.emit({type: 'expand', all: true})")
    assert len(rows(page)) == 68
    page.evaluate("v => window.model.set('visible', v)", [0, 5, 6, 8])
    assert rows(page) == ["", "layer1", "layer1.0", "layer1.0.bn1"]
    page.evaluate("() => window.model.set('visible', null)")
    page.evaluate("() => window.model.emit({type: 'expand', all: false})")
    assert len(rows(page)) == 11


def test_full_message_replaces_data(loaded: tuple[Any, ModuleTree]) -> None:
    page, tree = loaded
    tree.set_frozen("", True)
    page.evaluate(
        "n => window.model.emit({type: 'full', nodes: n})",
        json.loads(json.dumps(tree_payload(tree))),
    )
    states = page.eval_on_selector_all(".fw-row", "els => els.map(e => e.dataset.state)")
    assert set(states) <= {"frozen", "empty"}

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
import torch
from torch import nn
from torchvision.models import resnet18

from freeze_widgets import ModuleTree
from freeze_widgets.base.wording import format_count
from freeze_widgets.ui.payload import delta_rows, tree_payload

from .browser_harness import launch_chromium

# Starts Chromium: left out by -m "not browser" (and by the quick tier).
pytestmark = [pytest.mark.browser, pytest.mark.slow]

ESM = Path(__file__).resolve().parents[1] / "freeze_widgets" / "ui" / "tree.js"
CSS = ESM.with_name("tree.css")

HARNESS = """
async ([source, tree, css]) => {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
  const mod = await import(url);
  const listeners = {};
  const state = {tree, visible: null, disabled: false, note: ""};
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
  window.view = el;
  mod.default.render({model: window.model, el});
  return typeof mod.default.render;
}
"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with launch_chromium() as browser:
        pg = browser.new_page()
        yield pg


def load(page: Any, tree: ModuleTree) -> None:
    page.set_content("<html><body></body></html>")
    kind = page.evaluate(HARNESS, [ESM.read_text(), tree_payload(tree), CSS.read_text()])
    assert kind == "function"


@pytest.fixture
def loaded(page: Any) -> tuple[Any, ModuleTree]:
    tree = ModuleTree(resnet18())
    load(page, tree)
    return page, tree


def rows(page: Any) -> list[str]:
    return page.eval_on_selector_all(".fw-row", "els => els.map(e => e.dataset.path)")


def listed(page: Any) -> int:
    """Rows in the list, rendered or not (the view is virtualised)."""
    return int(page.get_attribute(".fw-tree", "data-rows"))


def test_module_loads_and_renders_collapsed(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    assert rows(page)[:3] == ["", "conv1", "bn1"]
    assert "layer1.0" not in rows(page)  # collapsed rows are not in the DOM
    n = sum(p.numel() for p in resnet18().layer1.parameters())  # 147,968: abbreviated
    assert page.text_content('.fw-row[data-path="layer1"] .fw-row-counts') == (
        f"{format_count(n)} / {format_count(n)}"
    )
    assert page.text_content('.fw-row[data-path="layer1"] .fw-state') == "trains"
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
    counts = page.text_content('.fw-row[data-path="layer1"] .fw-row-counts')
    assert counts == f"{format_count(73_984)} / {format_count(147_968)}" == "74.0K / 148K"
    assert page.text_content('.fw-row[data-path="layer1"] .fw-state') == "partly"
    assert page.text_content('.fw-row[data-path="layer1.0"] .fw-state') == "frozen"
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
    page, tree = loaded
    page.evaluate("() => window.model.emit({type: 'expand', all: true})")
    assert listed(page) == 68
    assert rows(page) == [n.path for n in tree.nodes][: len(rows(page))]
    page.evaluate("v => window.model.set('visible', v)", [0, 5, 6, 8])
    assert rows(page) == ["", "layer1", "layer1.0", "layer1.0.bn1"]
    page.evaluate("() => window.model.set('visible', null)")
    page.evaluate("() => window.model.emit({type: 'expand', all: false})")
    assert len(rows(page)) == listed(page) == 11


def test_full_message_replaces_data(loaded: tuple[Any, ModuleTree]) -> None:
    page, tree = loaded
    tree.set_frozen("", True)
    page.evaluate(
        "n => window.model.emit({type: 'full', nodes: n})",
        json.loads(json.dumps(tree_payload(tree))),
    )
    states = page.eval_on_selector_all(".fw-row", "els => els.map(e => e.dataset.state)")
    assert set(states) <= {"frozen", "empty"}


def big_tree() -> ModuleTree:
    """10,101 modules on the meta device: 100 blocks of 100 Linear layers."""
    with torch.device("meta"):
        model = nn.Sequential(
            *[nn.Sequential(*[nn.Linear(8, 8) for _ in range(100)]) for _ in range(100)]
        )
    return ModuleTree(model)


def test_ten_thousand_rows_are_virtualised(page: Any) -> None:
    tree = big_tree()
    load(page, tree)
    page.evaluate("() => window.model.emit({type: 'expand', all: true})")
    assert listed(page) == len(tree) == 10_101
    rendered = rows(page)
    assert 20 < len(rendered) < 100  # only what is on screen plus a margin
    assert rendered == [n.path for n in tree.nodes][: len(rendered)]
    # The spacers keep the scroll height of every row.
    height = page.eval_on_selector(".fw-tree-box", "b => b.scrollHeight")
    assert height == (10_101 + 1) * 22  # + the column header
    # Reach a row far down; it is in the DOM, focused, and a delta patches it.
    assert page.evaluate("() => window.view.fwReveal('77.42')")
    assert page.get_attribute(".fw-row.fw-focus", "data-path") == "77.42"
    changed = tree.set_frozen("77.42", True)
    page.evaluate(
        "m => window.model.emit(m)", {"type": "delta", "u": delta_rows(changed), "seq": 1}
    )
    assert page.eval_on_selector('.fw-row[data-path="77.42"] input.fw-check', "e => e.checked")
    assert page.query_selector('.fw-row[data-path="77"]') is None  # 42 rows up: not in the DOM
    assert page.evaluate("() => window.view.fwReveal('77')")  # drawn from the patched data
    assert page.eval_on_selector('.fw-row[data-path="77"] input.fw-check', "e => e.indeterminate")
    # Keyboard navigation crosses the rendered window.
    page.focus(".fw-tree-box")
    page.keyboard.press("End")
    assert page.get_attribute(".fw-row.fw-focus", "data-path") == "99.99"
    page.keyboard.press("ArrowUp")
    assert page.get_attribute(".fw-row.fw-focus", "data-path") == "99.98"
    page.keyboard.press("Home")
    assert page.get_attribute(".fw-row.fw-focus", "data-path") == ""
    assert len(rows(page)) < 100


def test_freeze_up_to_here_button_key_and_tooltip(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    assert page.evaluate("() => window.view.fwReveal('layer1.0.conv1')")
    button = '.fw-row[data-path="layer1.0.conv1"] .fw-freeze-to'
    assert page.is_visible(button)  # shown on the focused row, no hover needed
    title = page.get_attribute(button, "title")
    assert "before this row in module order, plus this row" in title and "U" in title
    for path in ("", "relu", "layer1.0.relu"):  # no parameters (or the root): not offered
        assert page.query_selector(f'.fw-row[data-path="{path}"] .fw-freeze-to') is None
    page.focus(".fw-tree-box")
    page.keyboard.press("u")
    assert page.evaluate("window.sent.at(-1)") == {"type": "freeze_to", "path": "layer1.0.conv1"}
    page.keyboard.press("ArrowDown")  # layer1.0.bn1
    page.keyboard.press("ArrowDown")  # layer1.0.relu: no parameters
    count = page.evaluate("window.sent.length")
    page.keyboard.press("u")
    assert page.evaluate("window.sent.length") == count


def test_full_path_on_hover_and_breadcrumb(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    page.evaluate("() => window.view.fwReveal('layer2.1.bn2')")
    label = '.fw-row[data-path="layer2.1.bn2"] .fw-label'
    assert page.get_attribute(label, "title") == "layer2.1.bn2 (BatchNorm2d)"
    assert page.text_content(".fw-breadcrumb") == (
        "ResNet \u203a layer2 \u203a 1 \u203a bn2 (BatchNorm2d)"
    )
    assert page.get_attribute(".fw-breadcrumb", "data-path") == "layer2.1.bn2"
    assert page.text_content(".fw-tree-head") == "module (type)trainable / totalstate"


def test_note_and_disabled(loaded: tuple[Any, ModuleTree]) -> None:
    page, _ = loaded
    assert page.is_hidden(".fw-tree-note")
    page.evaluate("() => window.model.set('note', \"No module matches 'zzz'\")")
    assert page.text_content(".fw-tree-note") == "No module matches 'zzz'"
    page.evaluate("() => window.model.set('disabled', true)")
    assert page.eval_on_selector('.fw-row[data-path="layer1"] input.fw-check', "e => e.disabled")
    assert page.eval_on_selector('.fw-row[data-path="layer1"] .fw-freeze-to', "e => e.disabled")
    count = page.evaluate("window.sent.length")
    page.focus(".fw-tree-box")
    page.keyboard.press(" ")
    page.keyboard.press("u")
    assert page.evaluate("window.sent.length") == count


def test_lora_rows_say_lora_and_fold_their_bookkeeping(page: Any, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    model = peft.get_peft_model(transformers.GPT2LMHeadModel(config), lora)
    tree = ModuleTree(model)
    load(page, tree)
    path = "base_model.model.transformer.h.0.attn.c_attn"
    assert page.evaluate("p => window.view.fwReveal(p)", path)
    assert page.text_content(f'.fw-row[data-path="{path}"] .fw-type') == (
        "(LoRA r=4 \u03b1=8 on Conv1D)"
    )
    page.click(f'.fw-row[data-path="{path}"] .fw-caret')
    shown = set(rows(page))
    assert {f"{path}.base_layer", f"{path}.lora_A", f"{path}.lora_B"} <= shown
    for empty in ("lora_dropout", "lora_embedding_A", "lora_magnitude_vector"):
        assert f"{path}.{empty}" not in shown  # folded: no parameters
        assert not page.evaluate("p => window.view.fwReveal(p)", f"{path}.{empty}")
    page.screenshot(path=str(tmp_path / "lora_rows.png"))

"""While a fine-tune or export holds the model, every model-changing action is refused.

A panel's run is started for real (its thread holds the explorer's BusyState), with its work
blocked on an Event so the test decides when it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeExplorer, FreezeSpec

from .conftest import requires_grad_map


def snapshot(model: nn.Module) -> tuple[dict[str, bool], dict[str, torch.Tensor], list[str]]:
    """requires_grad flags, every tensor (copied) and every module type."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return requires_grad_map(model), tensors, [type(m).__name__ for m in model.modules()]


def assert_unchanged(model: nn.Module, before: Any) -> None:
    flags, tensors, types = snapshot(model)
    assert flags == before[0]
    assert tensors.keys() == before[1].keys()
    for key, value in tensors.items():
        assert torch.equal(value, before[1][key]), key  # bitwise
    assert types == before[2]


@pytest.fixture(params=["finetune", "export"])
def busy_explorer(
    request: pytest.FixtureRequest, seq_bn: nn.Module, tmp_path: Path
) -> Iterator[tuple[FreezeExplorer, str]]:
    ex = FreezeExplorer(seq_bn, spec_path=str(tmp_path / "spec.json"))
    FreezeSpec(frozen=("0", "1")).to_json()
    (tmp_path / "spec.json").write_text(FreezeSpec(frozen=("0", "1")).to_json())
    panel = ex.finetune if request.param == "finetune" else ex.export
    release = threading.Event()
    started = threading.Event()

    def blocked_work() -> None:
        started.set()
        release.wait(30)

    panel._work = blocked_work  # type: ignore[method-assign]
    panel.run()
    assert started.wait(10)
    reason = "a fine-tune is running" if request.param == "finetune" else "an export is running"
    yield ex, reason
    release.set()
    panel.wait(10)
    ex.close()


def test_every_model_change_is_refused_while_busy(
    busy_explorer: tuple[FreezeExplorer, str],
) -> None:
    ex, reason = busy_explorer
    assert ex.busy.reason == reason
    assert ex.tree_view.disabled and ex.toolbar.freeze_all.disabled and ex.toolbar.bn.disabled
    other = ex.export if reason.startswith("a fine-tune") else ex.finetune
    assert not other.running
    before = snapshot(ex.model)
    counts = ex.counts
    actions = {
        "tick": lambda: ex.tick("0"),
        "untick": lambda: ex.tick("", frozen=False),
        "freeze all": ex.toolbar.freeze_all.click,
        "unfreeze all": ex.toolbar.unfreeze_all.click,
        "freeze up to here": lambda: ex.freeze_up_to("1"),
        "spec load": ex.toolbar.load.click,
    }
    for name, act in actions.items():
        ex.messages.clear()
        act()
        line = ex.messages.last_error
        assert line is not None and reason in line and "refused" in line, name
        assert "\n" not in line
        assert_unchanged(ex.model, before)
        assert ex.counts == counts, name
    for policy in ("frozen", "train"):
        ex.toolbar.bn.value = policy
        assert ex.toolbar.bn.value == "eval"  # reverted: never shows a policy not applied
        assert ex.messages.last_error is not None and reason in ex.messages.last_error
        assert_unchanged(ex.model, before)


def test_view_controls_still_work_while_busy(
    busy_explorer: tuple[FreezeExplorer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ex, _ = busy_explorer
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(ex.tree_view, "send", lambda content, buffers=None: sent.append(content))
    ex.toolbar.filter.value = "3"
    assert ex.tree_view.visible == [0, 4]
    ex.toolbar.filter.value = ""
    assert ex.tree_view.visible is None
    ex.toolbar.expand.click()
    ex.toolbar.collapse.click()
    assert sent == [{"type": "expand", "all": True}, {"type": "expand", "all": False}]
    ex.toolbar.code.value = True
    assert "frozen_paths" in ex.code_view.value


def test_changes_work_again_after_the_run(seq_bn: nn.Module) -> None:
    ex = FreezeExplorer(seq_bn)
    _ = ex.export  # built before the run: its Run button follows the busy state)
    release = threading.Event()
    ex.finetune._work = lambda: release.wait(30)  # type: ignore[method-assign,assignment,return-value]
    ex.finetune.run()
    ex.tick("0")
    assert ex.state("0") == "trainable"
    assert ex.export.run_button.disabled  # one run at a time: the other panel waits
    release.set()
    ex.finetune.wait(10)
    assert ex.busy.reason is None
    assert not ex.tree_view.disabled and not ex.toolbar.bn.disabled
    assert not ex.export.run_button.disabled  # (the running panel re-enables its own)
    assert "running" not in ex.messages.value  # the busy line goes when the run ends
    ex.tick("0")
    assert ex.state("0") == "frozen" and not seq_bn[0].weight.requires_grad
    ex.toolbar.bn.value = "frozen"
    assert ex.toolbar.bn.value == "frozen" and ex.messages.last_error is None
    ex.close()


def test_failed_bn_policy_reverts_the_dropdown(
    seq_bn: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = FreezeExplorer(seq_bn)
    ex.tick("1")

    def fail(_policy: str) -> list[Any]:
        raise RuntimeError("swap failed")

    monkeypatch.setattr(ex.tree, "set_bn_policy", fail)
    ex.toolbar.bn.value = "frozen"
    assert ex.toolbar.bn.value == "eval"
    assert ex.messages.last_error is not None and "swap failed" in ex.messages.last_error

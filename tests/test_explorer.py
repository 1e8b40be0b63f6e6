"""FreezeExplorer through its real message path (no browser): ticks, counts, deltas, toolbar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeExplorer, FreezeSpec, FrozenBatchNorm, explore
from freeze_widgets.ui.finetune_panel import IN_PLACE
from freeze_widgets.ui.payload import filter_visible, tree_payload

from .conftest import independent_counts, requires_grad_map


def assert_display_matches_model(ex: FreezeExplorer) -> None:
    """Header and every synced row equal an independent computation on the model."""
    total, trainable = independent_counts(ex.model)
    assert (ex.counts.total, ex.counts.trainable, ex.counts.frozen) == (
        total,
        trainable,
        total - trainable,
    )
    header = ex.header.value
    assert f'class="fw-trainable" data-value="{trainable}"' in header
    for record in ex.tree_view.rows:
        if record["k"] == "p":
            p = ex.model.get_parameter(record["p"])
            expected = (p.numel(), p.numel() if p.requires_grad else 0)
        else:
            expected = independent_counts(ex.model.get_submodule(record["p"]))
        assert (record["tot"], record["tr"]) == expected, record["p"]


class Recorder:
    """Records what the widget sends to the browser."""

    def __init__(self, ex: FreezeExplorer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[dict[str, Any]] = []
        original = ex.tree_view.send

        def send(content: dict[str, Any], buffers: Any = None) -> None:
            self.sent.append(content)
            original(content, buffers)

        monkeypatch.setattr(ex.tree_view, "send", send)


def test_tick_changes_exactly_that_subtree(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    before = requires_grad_map(resnet18)
    ex.tick("layer1")
    after = requires_grad_map(resnet18)
    flipped = {n for n in before if before[n] != after[n]}
    assert flipped == {n for n in before if n.startswith("layer1.")}
    assert ex.state("layer1") == "frozen"
    assert ex.state("layer1.0.conv1") == "frozen"
    assert ex.state("layer2") == "trainable"
    assert ex.state("") == "partial"
    assert ex.state("relu") == "empty"
    assert_display_matches_model(ex)
    ex.tick("layer1", frozen=False)
    assert requires_grad_map(resnet18) == before
    assert_display_matches_model(ex)


def test_counts_follow_every_change(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    start = ex.counts.trainable
    ex.tick("layer1")
    assert start - ex.counts.trainable == sum(p.numel() for p in resnet18.layer1.parameters())
    for path, frozen in [
        ("layer2.0", True),
        ("fc.bias", True),
        ("layer1.1", False),
        ("", True),
        ("fc", False),
    ]:
        ex.tick(path, frozen)
        assert_display_matches_model(ex)
    assert ex.state("") == "partial"
    assert ex.state("fc") == "trainable"


def test_partial_state_from_a_leaf(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.tick("layer3.1.bn2")
    assert [ex.state(p) for p in ("layer3.1.bn2", "layer3.1", "layer3", "")] == ["frozen"] + [
        "partial"
    ] * 3
    assert not resnet18.layer3[1].bn2.train().training  # the BatchNorm policy applies


def test_delta_carries_only_changed_nodes(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = FreezeExplorer(resnet18)
    rec = Recorder(ex, monkeypatch)
    ex.tick("layer2.1.conv2")
    assert len(rec.sent) == 1
    message = rec.sent[0]
    assert message["type"] == "delta"
    index = {r["p"]: r["i"] for r in ex.tree_view.rows}
    assert [row[0] for row in message["u"]] == [
        index[p] for p in ("", "layer2", "layer2.1", "layer2.1.conv2")
    ]
    full = len(str(tree_payload(ex.tree)))
    assert len(str(message)) < full / 20
    rec.sent.clear()
    ex.tick("layer2.1.conv2")  # already frozen: nothing changes, nothing is sent
    assert rec.sent == []


def test_parameter_rows_and_tied_weights(root_param: nn.Module, tied: nn.Module) -> None:
    ex = FreezeExplorer(root_param)
    ex.tick("class_token")
    assert not root_param.class_token.requires_grad
    assert ex.state("") == "partial" and ex.state("proj") == "trainable"
    ex2 = FreezeExplorer(tied)
    record = next(r for r in ex2.tree_view.rows if r["p"] == "decoder")
    assert record["sh"] == ["embed"]
    ex2.tick("decoder")
    assert ex2.state("embed") == "frozen"
    assert_display_matches_model(ex2)


def test_filter_shows_matches_with_ancestors(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.toolbar.filter.value = "layer2.0.downsample"
    shown = {ex.tree_view.rows[i]["p"] for i in ex.tree_view.visible or []}
    assert shown == {
        "",
        "layer2",
        "layer2.0",
        "layer2.0.downsample",
        "layer2.0.downsample.0",
        "layer2.0.downsample.1",
    }
    ex.toolbar.filter.value = "*.bn1"
    shown = {ex.tree_view.rows[i]["p"] for i in ex.tree_view.visible or []}
    assert {"layer1.0.bn1", "layer4.1.bn1", "layer1", "layer1.0"} <= shown
    assert "bn1" not in shown and "layer1.0.conv1" not in shown
    ex.toolbar.filter.value = ""
    assert ex.tree_view.visible is None
    assert filter_visible(ex.tree, "BatchNorm") is not None


def test_refresh_after_outside_change(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    resnet18.layer4.requires_grad_(False)
    assert ex.state("layer4") == "trainable"
    ex.refresh()
    assert ex.state("layer4") == "frozen"
    resnet18.fc = nn.Linear(512, 3)
    ex.refresh()
    assert_display_matches_model(ex)


def test_freeze_all_unfreeze_all_and_freeze_to(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.toolbar.freeze_all.click()
    assert ex.counts.trainable == 0
    ex.toolbar.unfreeze_all.click()
    assert ex.counts.frozen == 0
    # The last row of layer3: everything up to and including it freezes (freeze_through).
    ex.tree_view.receive({"type": "freeze_to", "path": "layer3.1.bn2"})
    trainable_top = {n.split(".")[0] for n, p in resnet18.named_parameters() if p.requires_grad}
    assert trainable_top == {"layer4", "fc"}
    assert_display_matches_model(ex)


def test_freeze_up_to_a_nested_row_is_freeze_through(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = FreezeExplorer(resnet18)
    rec = Recorder(ex, monkeypatch)
    ex.tree_view.receive({"type": "freeze_to", "path": "layer3.1.conv1"})
    names = [n for n, _ in resnet18.named_parameters()]
    cut = names.index("layer3.1.conv1.weight") + 1  # conv1 has no bias
    assert [n for n, p in resnet18.named_parameters() if not p.requires_grad] == names[:cut]
    assert ex.state("layer3.1") == "partial" and ex.state("layer3.1.bn1") == "trainable"
    assert ex.state("layer3.0") == "frozen" and ex.state("") == "partial"
    assert_display_matches_model(ex)
    assert [m["type"] for m in rec.sent] == ["delta"]  # only changed rows, never the full tree
    assert "layer3.1.conv1" in (ex.messages.value or "")


def test_bn_policy_choice(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.toolbar.bn.value = "frozen"
    ex.tick("layer1.0")
    assert isinstance(resnet18.layer1[0].bn1, FrozenBatchNorm)
    record = next(r for r in ex.tree_view.rows if r["p"] == "layer1.0.bn1")
    assert record["t"] == "FrozenBatchNorm"
    ex.toolbar.bn.value = "eval"  # re-applied to what is frozen now
    assert isinstance(resnet18.layer1[0].bn1, nn.BatchNorm2d)
    assert not resnet18.train().layer1[0].bn1.training
    assert record["t"] == "BatchNorm2d"
    assert_display_matches_model(ex)


def test_code_view_reproduces_the_freeze(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.tick("layer1")
    ex.tick("fc.bias")
    ex.toolbar.code.value = True
    assert "frozen_paths" in ex.code_view.value and "&#x27;layer1&#x27;" in ex.code_view.value
    ex.tick("layer2")
    assert "&#x27;layer2&#x27;" in ex.code_view.value  # kept up to date while visible
    from torchvision.models import resnet18 as build

    fresh = build(weights=None)
    exec(ex.spec().to_code(), {"model": fresh})
    assert requires_grad_map(fresh) == requires_grad_map(resnet18)


def test_save_and_load_spec(resnet18: nn.Module, tmp_path: Path) -> None:
    ex = FreezeExplorer(resnet18, spec_path=str(tmp_path / "spec.json"))
    ex.tick("layer1")
    ex.tick("layer3.0")
    ex.toolbar.save.click()
    assert ex.messages.last_error is None
    assert FreezeSpec.from_json((tmp_path / "spec.json").read_text()).frozen == (
        "layer1",
        "layer3.0",
    )
    ex.toolbar.unfreeze_all.click()
    ex.toolbar.load.click()
    assert ex.state("layer1") == "frozen" and ex.state("layer3.0") == "frozen"
    assert_display_matches_model(ex)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no spec file"),
        ("{broken", "invalid JSON"),
        ('{"frozen": ["layer1", "layer9"]}', "layer9"),
        ('{"paths": []}', '"frozen" list'),
    ],
)
def test_bad_spec_files_give_one_clear_line(
    resnet18: nn.Module, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    ex = FreezeExplorer(resnet18, spec_path=str(path))
    ex.tick("layer4")
    before = requires_grad_map(resnet18)
    ex.toolbar.load.click()
    assert ex.messages.last_error is not None
    assert message in ex.messages.last_error
    assert "\n" not in ex.messages.last_error
    assert "Traceback" not in ex.messages.last_error
    assert requires_grad_map(resnet18) == before  # never half-changed
    assert_display_matches_model(ex)


def test_unknown_tick_path_shows_error_not_traceback(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.tick("layer5")
    assert ex.messages.last_error is not None
    assert "layer5" in ex.messages.last_error
    assert "fw-error" in ex.messages.value and "<details" in ex.messages.value
    assert ex.counts.frozen == 0


def test_sync_message_resends_current_tree(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = FreezeExplorer(resnet18)
    ex.tick("layer1")
    rec = Recorder(ex, monkeypatch)
    ex.tree_view.receive({"type": "sync"})
    assert rec.sent[0]["type"] == "full"
    layer1 = next(r for r in rec.sent[0]["nodes"] if r["p"] == "layer1")
    assert layer1["tr"] == 0


def test_explore_by_name_on_meta_device() -> None:
    ex = explore("resnet152", device="meta")
    assert ex.counts.total == 60_192_808
    assert "meta device" in ex.header.value
    ex.tick("layer3")
    assert ex.state("layer3") == "frozen"


def test_explore_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        explore(torch.zeros(3))  # type: ignore[arg-type]


def test_finetune_from_the_explorer_refreshes_the_tree(seq_bn: nn.Module) -> None:
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 32), torch.randint(0, 3, (64,)))
    ex = FreezeExplorer(seq_bn)
    ex.finetune._data = data
    ex.finetune.num_classes.value = 3  # the head has 2 outputs: it gets replaced
    ex.finetune.head_choice.value = IN_PLACE  # asked for: the new head goes into the model
    ex.finetune.steps.value = 4
    ex.tick("0")
    frozen_before = seq_bn[0].weight.detach().clone()
    ex.finetune.run_button.click()
    ex.finetune.wait()
    report = ex.finetune.last_report
    assert report is not None, ex.finetune.messages.last_error
    assert report.ok
    assert torch.equal(seq_bn[0].weight, frozen_before)
    assert ex.tree.node("3").total == 32 * 3 + 3  # the tree shows the new head
    assert_display_matches_model(ex)
    assert not ex.tree_view.disabled


def test_row_state_is_decided_in_python_and_sent(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = FreezeExplorer(resnet18)
    rec = Recorder(ex, monkeypatch)
    ex.tick("layer1.0.conv1")

    def expected(path: str) -> str:
        total, trainable = independent_counts(resnet18.get_submodule(path))
        if total == 0:
            return "empty"
        return "trainable" if trainable == total else "frozen" if trainable == 0 else "partial"

    for record in ex.tree_view.rows:
        assert record["st"] == expected(record["p"]), record["p"]
    sent = {row[0]: row[4] for row in rec.sent[0]["u"]}
    index = {r["p"]: r["i"] for r in ex.tree_view.rows}
    assert sent == {
        index[""]: "partial",
        index["layer1"]: "partial",
        index["layer1.0"]: "partial",
        index["layer1.0.conv1"]: "frozen",
    }

"""What the panels say: abbreviated counts, states, globs as typed, adapters, plain wording."""

from __future__ import annotations

import html
import warnings

import pytest
import torch
from torch import nn

from freeze_widgets.base.wording import format_count
from freeze_widgets.models.weights import PretrainedWeightsUnavailable
from freeze_widgets.tree import ModuleTree
from freeze_widgets.ui.background import BusyState
from freeze_widgets.ui.explorer import FreezeExplorer, explore
from freeze_widgets.ui.payload import filter_visible, trainable_visible, tree_payload


def test_format_count_reads_like_a_quoted_figure() -> None:
    cases = {
        0: "0",
        999: "999",
        1_000: "1.00K",
        147_968: "148K",
        999_999: "1.00M",  # rounding carries into the next unit
        11_689_512: "11.7M",
        68_976_648_192: "69.0B",
        1_200_000_000_000: "1.20T",
    }
    assert {n: format_count(n) for n in cases} == cases


def test_header_adds_the_short_figure_for_big_counts() -> None:
    class Big(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(1000, 1500)  # 1,501,500 parameters

    ex = FreezeExplorer(Big())
    total = sum(p.numel() for p in ex.model.parameters())
    assert f'data-value="{total}"><b>{total:,}</b></span>' in ex.header.value
    assert f'<small class="fw-abbr">({format_count(total)})</small>' in ex.header.value
    ex.close()


class Llamaish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(12))
        self.lm_head = nn.Linear(4, 2)


def test_a_glob_matches_any_path_suffix_as_typed() -> None:
    tree = ModuleTree(Llamaish())
    visible = filter_visible(tree, "layers.7*")
    assert visible is not None
    paths = {tree.nodes[i].path for i in visible}
    assert "model.layers.7" in paths
    assert "model.layers.1" not in paths and "lm_head" not in paths
    whole = filter_visible(tree, "model.layers.1?")  # full-path globs still work
    assert whole is not None
    assert {tree.nodes[i].path for i in whole} >= {"model.layers.10", "model.layers.11"}


def test_trainable_only_view_lists_exactly_what_trains() -> None:
    model = Llamaish()
    for layer in list(model.model.layers)[:10]:
        layer.requires_grad_(False)
    tree = ModuleTree(model)
    visible = set(trainable_visible(tree))
    for node in tree.nodes:
        if node.children:
            continue  # containers are shown as the way to what trains
        assert (node.index in visible) == (node.trainable > 0), node.path
    independent = {f"model.layers.{i}" for i in (10, 11)} | {"lm_head"}
    shown = {tree.nodes[i].path for i in visible if not tree.nodes[i].children}
    assert shown == independent


def test_explorer_trainable_only_toggle_and_its_note() -> None:
    model = Llamaish()
    ex = FreezeExplorer(model)
    ex.toolbar.trainable_only.value = True
    assert ex.tree_view.visible is not None
    ex.toolbar.freeze_all.click()
    assert ex.tree_view.note == "Nothing trains: every parameter is frozen"
    ex.toolbar.trainable_only.value = False
    assert ex.tree_view.visible is None and ex.tree_view.note == ""
    ex.close()


def test_freeze_up_to_the_last_row_says_nothing_is_left() -> None:
    model = Llamaish()
    ex = FreezeExplorer(model)
    ex.freeze_up_to("model.layers.3")
    assert "the rest trains" in html.unescape(ex.messages.value)
    ex.freeze_up_to("lm_head")
    text = html.unescape(ex.messages.value)
    assert "nothing is left to train" in text and "the rest trains" not in text
    assert not any(p.requires_grad for p in model.parameters())
    ex.close()


def test_busy_line_says_changes_are_refused() -> None:
    ex = FreezeExplorer(Llamaish())
    assert ex.busy.acquire("a fine-tune is running")
    assert "are refused until it ends" in html.unescape(ex.messages.value)
    ex.busy.release()
    ex.close()
    assert isinstance(ex.busy, BusyState)


def test_offline_explore_says_it_once_in_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-freeze-widgets-test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = explore("resnet18")
    assert not [w for w in caught if issubclass(w.category, PretrainedWeightsUnavailable)]
    assert "Random weights" in html.unescape(ex.header.value)
    ex.close()


def test_lora_payload_labels_and_folds() -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)
    lora = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True)
    model = peft.get_peft_model(transformers.GPT2LMHeadModel(config), lora)
    tree = ModuleTree(model)
    records = {r["p"]: r for r in tree_payload(tree)}
    path = "base_model.model.transformer.h.0.attn.c_attn"
    assert records[path]["ad"] == "LoRA r=2 \u03b1=4 on Conv1D"
    folded = {p.rsplit(".", 1)[-1] for p, r in records.items() if r.get("hd")}
    assert folded == {
        "lora_dropout",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
    }
    assert not records[f"{path}.lora_A"].get("hd")
    # Every folded row holds no parameter (independently of the tree).
    for p, r in records.items():
        if r.get("hd"):
            assert sum(t.numel() for t in model.get_submodule(p).parameters()) == 0
    assert torch.is_grad_enabled()

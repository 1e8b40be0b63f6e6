"""What the explorer says: labels, tooltips, notices, and the live training-memory line."""

from __future__ import annotations

import html
import re

import pytest
from torch import nn

from freeze_widgets import FreezeExplorer
from freeze_widgets.cost.estimate import CostModel
from freeze_widgets.ui.payload import tree_payload
from freeze_widgets.ui.toolbar import KEYS_HELP


def test_freeze_up_to_here_offered_only_on_rows_with_parameters(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    records = {r["p"]: r for r in tree_payload(ex.tree)}
    for path, record in records.items():
        has_params = sum(p.numel() for p in _params_at(resnet18, path)) > 0
        assert bool(record.get("ft")) == (has_params and path != ""), path
    assert "ft" not in records["relu"] and "ft" not in records["layer1.0.relu"]
    assert records["layer1.0.conv1"]["ft"] == 1


def _params_at(model: nn.Module, path: str) -> list[nn.Parameter]:
    try:
        return list(model.get_submodule(path).parameters())
    except AttributeError:
        return [model.get_parameter(path)]


def test_bn_policy_help_reaches_the_page(resnet18: nn.Module) -> None:
    tb = FreezeExplorer(resnet18).toolbar
    # ipywidgets renders ``tooltip`` as a title only on widgets without a description.
    assert tb.bn.description == "" and "eval" in (tb.bn.tooltip or "")
    assert tb.bn_label.tooltip == tb.bn.tooltip
    assert "FrozenBatchNorm" in (tb.bn.tooltip or "")
    assert "U freezes everything up to" in KEYS_HELP and KEYS_HELP in tb.help.value


def test_filter_without_match_says_so(resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.toolbar.filter.value = "zzz"
    assert ex.tree_view.visible == [0]
    assert ex.tree_view.note == "No module matches 'zzz'"
    ex.toolbar.filter.value = "layer1"
    assert ex.tree_view.note == ""


def test_random_weights_notice_is_plain_and_says_where_the_file_goes(
    resnet18: nn.Module,
) -> None:
    reason = "random: pretrained weights unavailable (URLError: <urlopen error [Errno -3]>)"
    resnet18._freeze_widgets_weights = reason  # what load_model records offline
    ex = FreezeExplorer(resnet18, model_name="resnet18")
    note = html.unescape(re.search(r'class="fw-note"[^>]*>([^<]*)<', ex.header.value)[1])
    assert (
        "Random weights: the pretrained file could not be loaded. "
        "Put resnet18-f37072fd.pth in" in note
    )
    assert "checkpoints (see load_model)" in note
    assert "URLError" not in note  # the raw reason is only in the hover text
    assert "URLError" in html.unescape(ex.header.value)
    unnamed = FreezeExplorer(resnet18)
    assert "see load_model" in html.unescape(unnamed.header.value)


def test_random_weights_notice_from_load_model_names_the_file_without_a_model_name() -> None:
    from freeze_widgets import PretrainedWeightsUnavailable, load_model

    with pytest.warns(PretrainedWeightsUnavailable):
        model = load_model("resnet18")  # offline in the tests: random weights
    ex = FreezeExplorer(model)  # no model_name: the hint travels with the model
    note = html.unescape(re.search(r'class="fw-note"[^>]*>([^<]*)<', ex.header.value)[1])
    assert "Put resnet18-f37072fd.pth in" in note and "checkpoints" in note
    ex.close()


@pytest.mark.parametrize("bn", ["eval", "frozen"])
def test_training_memory_line_follows_every_tick(resnet18: nn.Module, bn: str) -> None:
    ex = FreezeExplorer(resnet18)
    ex.toolbar.bn.value = bn
    for path, frozen in (("", False), ("layer1", True), ("layer3.1", True), ("fc", True)) * 2:
        ex.tick(path, frozen=frozen if ex.state(path) != "frozen" else False)
        expected = CostModel(resnet18, example_inputs=False).estimate("adamw", activations=False)
        assert ex.header.cost[0] == expected.summary()
        assert html.escape(expected.summary()) in ex.header.value
    assert "less than unfrozen" in ex.header.cost[0]
    assert "Activations are not included" in ex.header.cost[1]
    assert 'class="fw-cost" title="' in ex.header.value


def test_training_memory_skipped_readably_when_the_estimate_fails(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("no estimate for this")

    monkeypatch.setattr("freeze_widgets.ui.cost_line.CostModel", broken)
    ex = FreezeExplorer(resnet18)
    assert ex.header.cost[0] == "training memory: not estimated for this model"
    assert "no estimate for this" in ex.header.cost[1]
    ex.tick("layer1")
    assert ex.state("layer1") == "frozen"  # the explorer works without it


def test_filter_finds_names_that_hold_glob_characters() -> None:
    """A ModuleDict key like ``r[1]`` is found by typing it (a substring), and globs still work."""
    from freeze_widgets import ModuleTree
    from freeze_widgets.ui.payload import filter_visible

    model = nn.Module()
    model.d = nn.ModuleDict({"r[1]": nn.Linear(2, 2), "r1": nn.Linear(2, 2)})
    tree = ModuleTree(model)
    paths = {tree.nodes[i].path for i in filter_visible(tree, "r[1]") or []}
    assert "d.r[1]" in paths
    globbed = {tree.nodes[i].path for i in filter_visible(tree, "d.r?") or []}
    assert "d.r1" in globbed


def test_code_view_states_the_cost_and_its_assumptions() -> None:
    from freeze_widgets import FreezeExplorer

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    ex = FreezeExplorer(model)
    ex.tick("0")
    ex.toolbar.code.value = True
    text = html.unescape(ex.code_view.value)
    assert "# training memory about" in text
    assert "# " + ex._cost.assumptions[0] in text  # type: ignore[union-attr]
    ex.close()

"""The explorer's code view as a trainer's config, and a pasted config previewed then applied."""

from __future__ import annotations

import html
from pathlib import Path

from freeze_widgets.configs import preview
from freeze_widgets.ui import FreezeExplorer

from .config_tools import gpt2, grads
from .conftest import model_fingerprint


def _explorer() -> FreezeExplorer:
    ex = FreezeExplorer(gpt2(12))
    ex.toolbar.code.value = True
    return ex


def test_choosing_a_tool_shows_its_config_and_follows_the_ticks() -> None:
    ex = _explorer()
    ex.tick("transformer")
    ex.tick("transformer.h.11", frozen=False)
    ex.config_view.target.value = "axolotl"
    text = html.unescape(ex.code_view.value)
    assert "unfrozen_parameters:\n- transformer.h.11." in text
    ex.tick("transformer.h.10", frozen=False)  # kept up to date while shown
    assert "- transformer.h.10." in html.unescape(ex.code_view.value)
    ex.config_view.target.value = "LLaMA-Factory"
    assert "freeze_trainable_layers: 2" in html.unescape(ex.code_view.value)
    ex.tick("transformer.h.10")
    ex.tick("transformer.h.3", frozen=False)  # layers 3 and 11: no run, no llama_pro stride
    text = html.unescape(ex.code_view.value)
    assert "cannot express this freeze" in text and "nearest it can say" in text
    ex.config_view.target.value = "PyTorch code"
    assert "frozen_paths" in html.unescape(ex.code_view.value)


def test_preview_highlights_what_would_change_then_apply_makes_it_so() -> None:
    ex = _explorer()
    model = ex.model
    ex.tick("transformer")
    ex.tick("transformer.h.1", frozen=False)  # what the user means: train layer 1 only
    view = ex.config_view
    view.target.value = "axolotl"
    view.paste.value = "unfrozen_parameters:\n  - transformer.h.1\n"
    before = model_fingerprint(model)
    view.preview_button.click()
    assert model_fingerprint(model) == before  # a preview changes nothing
    lit = {ex.tree_view.rows[i]["p"] for i in ex.tree_view.highlight}
    blocks = {p for p in lit if p.count(".") == 2 and p.startswith("transformer.h.")}
    assert blocks == {"transformer.h.10", "transformer.h.11"}  # the surprise, and only it
    assert "transformer.wte" not in lit and "transformer.h.1" not in lit
    assert "also trains transformer.h.10" in html.unescape(view.result.value)
    assert not view.apply_button.disabled
    expected = preview("axolotl", view.paste.value, model).grad_map
    view.apply_button.click()
    assert grads(model) == expected
    assert ex.state("transformer.h.10") == "trainable" and ex.state("transformer.h.2") == "frozen"
    assert ex.tree_view.highlight == [] and view.apply_button.disabled


def test_bad_paste_is_one_line_and_nothing_changes() -> None:
    ex = _explorer()
    view = ex.config_view
    view.target.value = "ms-swift"
    before = model_fingerprint(ex.model)
    for text in ("freeze_parameters: [transformer.h.1\n", "freeze_parameter: [x]\n"):
        view.paste.value = text
        view.preview_button.click()
        assert ex.messages.last_error is not None and "Traceback" not in ex.messages.last_error
        assert view.apply_button.disabled and ex.tree_view.highlight == []
    assert "Did you mean 'freeze_parameters'" in ex.messages.last_error
    view.paste.value = "freeze_parameters: [model.layers.1.]\n"  # a Llama config
    view.preview_button.click()
    assert "another model" in (ex.messages.last_error or "")
    assert model_fingerprint(ex.model) == before


def test_save_writes_the_text_shown(tmp_path: Path) -> None:
    ex = _explorer()
    ex.tick("transformer.h.0")
    view = ex.config_view
    view.target.value = "ms-swift"
    view.path.value = str(tmp_path / "swift.yaml")
    view.save.click()
    saved = (tmp_path / "swift.yaml").read_text()
    assert saved == html.unescape(ex.code_view.value.split(">", 1)[1].rsplit("</pre>", 1)[0])
    assert "- transformer.h.0." in saved

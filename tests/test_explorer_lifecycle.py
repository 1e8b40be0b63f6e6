"""close() releases the model; explore() releases the previous explorer; meta-device buttons."""

from __future__ import annotations

import gc
import weakref

import ipywidgets as widgets
import pytest
import torch
from torch import nn

from freeze_widgets import FreezeExplorer, explore
from freeze_widgets.ui import lifecycle
from freeze_widgets.ui.panels_host import META_TOOLTIP

from .conftest import make_seq_bn


def _live_widget_ids() -> set[str]:
    return set(widgets.widget._instances)


def test_close_frees_the_model_and_every_widget() -> None:
    before = _live_widget_ids()
    refs = []
    for _ in range(5):
        model = make_seq_bn()
        ex = FreezeExplorer(model)
        ex.tick("0")
        ex.open_finetune.value = True  # panels built and shown
        ex.open_export.value = True
        ex.open_export.value = False  # built but hidden: must be closed too
        refs.append(weakref.ref(model))
        ex.close()
        del model
    gc.collect()
    assert [r() for r in refs] == [None] * 5
    assert _live_widget_ids() - before == set()  # nothing left registered
    del ex


def test_closed_explorer_says_so() -> None:
    ex = FreezeExplorer(make_seq_bn())
    ex.close()
    ex.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        _ = ex.model
    with pytest.raises(RuntimeError, match=r"explore\(model\)"):
        _ = ex.tree


def test_close_stops_a_running_finetune() -> None:
    model = make_seq_bn()
    ex = FreezeExplorer(model)
    stopped: list[bool] = []

    def work() -> None:
        stopped.append(ex.finetune._stop.wait(10))

    ex.finetune._work = work  # type: ignore[method-assign]
    ex.finetune.run()
    ref = weakref.ref(model)
    ex.close()
    assert stopped == [True]  # asked to stop, and waited for
    del model
    gc.collect()
    assert ref() is None


def test_explore_closes_the_previous_explorer_of_the_same_model() -> None:
    model = make_seq_bn()
    first = explore(model)
    second = explore(model)
    assert first._model is None and second.model is model
    other = explore(make_seq_bn())
    assert second.model is model  # a different model leaves it alone
    second.close()
    other.close()


def test_explore_closes_the_previous_explorer_of_the_same_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("freeze_widgets.ui.explorer.current_cell_id", lambda: "cell-1")
    a = make_seq_bn()
    first = explore(a)
    ref = weakref.ref(a)
    second = explore(make_seq_bn())  # re-running the cell with a new model
    del a
    gc.collect()
    assert ref() is None and first._model is None
    second.close()
    assert lifecycle.current_cell_id() is None  # outside a kernel: no cell to key on


def test_meta_device_model_disables_finetune_and_export() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    ex = FreezeExplorer(model)
    for toggle in (ex.open_finetune, ex.open_export):
        assert toggle.disabled
        assert toggle.tooltip == META_TOOLTIP
    assert "to_empty" in META_TOOLTIP and "device='meta'" in META_TOOLTIP
    ex.tick("0")  # exploring and ticking still work
    assert ex.state("0") == "frozen"
    real = FreezeExplorer(make_seq_bn())
    assert not real.open_finetune.disabled and not real.open_export.disabled
    ex.close()
    real.close()

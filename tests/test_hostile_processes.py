"""A multi-process fine-tune finds in the caller, in seconds, what one process would find
(issue 19, item 5): no worker starts for data or a model that cannot work."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from freeze_widgets import finetune, freeze
from freeze_widgets.distributed import runner
from tests.distributed_helpers import tiny_net

from .conftest import model_fingerprint


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    def launch(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("worker processes were started")

    monkeypatch.setattr(runner, "launch", launch)


def _refused(model: nn.Module, error: type[Exception], match: str, **kw: Any) -> None:
    before = model_fingerprint(model)
    with pytest.raises(error, match=match):
        finetune(model, **{"nproc": 2, "image_size": 16, "batch_size": 4, **kw})
    assert model_fingerprint(model) == before


def _images(
    n: int, labels: torch.Tensor | None = None, shape: tuple[int, ...] = (3, 16, 16)
) -> TensorDataset:
    y = labels if labels is not None else torch.arange(n) % 4
    return TensorDataset(torch.randn(n, *shape), y)


def test_a_model_class_from_a_function_body_is_refused_at_once(no_launch: None) -> None:
    class Local(nn.Sequential):
        pass

    model = Local(*tiny_net())
    freeze(model, "0", "1")
    _refused(model, TypeError, r"Local is defined in a function body.*\.py module")


def test_a_model_class_from_a_notebook_is_refused_at_once(no_launch: None) -> None:
    notebook_class = type("Cell", (nn.Sequential,), {"__module__": "__main__"})
    model = notebook_class(*tiny_net())
    _refused(model, TypeError, "Cell is defined in a notebook cell")


def test_a_dataset_class_from_a_notebook_is_refused_at_once(no_launch: None) -> None:
    class Items(Dataset[tuple[torch.Tensor, int]]):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.randn(3, 16, 16), i % 4

    _refused(tiny_net(), TypeError, "Items is defined in a function body", data=Items())


def test_labels_beyond_num_classes_are_found_before_any_worker(no_launch: None) -> None:
    data = _images(16, torch.arange(16) % 6)
    _refused(
        tiny_net(),
        ValueError,
        "labels run from 0 to 5, but num_classes=4",
        data=data,
        num_classes=4,
    )


def test_an_empty_dataset_is_found_before_any_worker(no_launch: None) -> None:
    _refused(tiny_net(), ValueError, "empty", data=_images(0))


def test_a_5d_input_is_found_before_any_worker(no_launch: None) -> None:
    data = _images(8, shape=(1, 3, 16, 16))
    _refused(tiny_net(), ValueError, r"cannot take the data.*\(2, 1, 3, 16, 16\)", data=data)


@pytest.mark.parametrize(
    ("nproc", "error", "match"),
    [(True, TypeError, "nproc must be an int"), (1000, ValueError, "nproc=1000 is more processes")],
)
def test_nproc_is_checked(
    nproc: object, error: type[Exception], match: str, no_launch: None
) -> None:
    _refused(tiny_net(), error, match, nproc=nproc)


def test_timeout_s_is_a_finetune_argument(no_launch: None) -> None:
    _refused(tiny_net(), ValueError, "timeout_s must be a positive", timeout_s=0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_abort_kills_a_multi_process_run_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    """What closing the explorer does: no 32 s block, no worker left until the timeout.

    (Stop itself ends the ranks together at a step boundary and keeps what was trained:
    tests/test_distributed_live.py. Here the data hangs, so no step boundary ever comes.)
    """
    import psutil

    from freeze_widgets.distributed import DistributedRunError
    from freeze_widgets.distributed.launcher import abort
    from tests.distributed_helpers import Misbehaving

    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    model = tiny_net()
    freeze(model, "0", "1")
    before = model_fingerprint(model)
    stop = threading.Event()
    set_at: list[float] = []

    def press_stop() -> None:
        set_at.append(time.monotonic())
        abort(stop)

    timer = threading.Timer(3.0, press_stop)
    timer.start()
    try:
        with pytest.raises(DistributedRunError, match="stopped") as info:
            finetune(
                model, Misbehaving("hang"), nproc=2, image_size=16, batch_size=4,
                timeout_s=100, stop=stop,
            )  # fmt: skip
        stopped_after = time.monotonic()
    finally:
        timer.cancel()
    assert info.value.cause == "stopped"
    assert stopped_after - set_at[0] < 5.0  # not the 100 s timeout
    assert model_fingerprint(model) == before
    alive = [
        p for p in me.children(recursive=True)
        if p.pid not in before_children and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert alive == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_closing_the_fine_tune_panel_during_a_2_process_run_returns_at_once() -> None:
    import psutil

    from freeze_widgets.ui.finetune_panel import FineTunePanel
    from tests.distributed_helpers import Misbehaving

    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    model = tiny_net()
    freeze(model, "0", "1")
    before = model_fingerprint(model)
    panel = FineTunePanel(lambda: model, data=Misbehaving("hang"), image_size=16)
    panel.processes.value = 2
    panel.batch_size.value = 4
    panel.run(block=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [
        p for p in me.children(recursive=True) if p.pid not in before_children
    ]:
        time.sleep(0.2)  # until the launcher runs
    start = time.monotonic()
    panel.close()
    assert time.monotonic() - start < 5.0  # not 32 s, not the run's timeout
    assert "the distributed run was stopped" in str(panel.last_error)
    assert model_fingerprint(model) == before
    alive = [
        p for p in me.children(recursive=True)
        if p.pid not in before_children and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert alive == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_nan_inputs_in_a_worker_are_named_and_the_model_is_untouched() -> None:
    from freeze_widgets.distributed import DistributedRunError

    data = _images(32)
    data.tensors[0][21, 0, 3, 3] = float("nan")  # not in the items the caller samples
    model = tiny_net()
    freeze(model, "0", "1")
    before = model_fingerprint(model)
    with pytest.raises(DistributedRunError, match="the inputs hold 1 NaN") as info:
        finetune(model, data, nproc=2, image_size=16, batch_size=4, timeout_s=150)
    assert "batch" in info.value.cause and "rank" in info.value.cause
    assert model_fingerprint(model) == before


_CALLER = """
import sys
sys.path.insert(0, {root!r})
from freeze_widgets import finetune, freeze
from tests.distributed_helpers import Misbehaving, tiny_net
model = tiny_net()
freeze(model, "0", "1")
finetune(model, Misbehaving("hang"), nproc=2, image_size=16, batch_size=4, timeout_s=300)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_workers_die_with_a_killed_caller(tmp_path: Path) -> None:
    """A notebook kernel killed mid-run: its launcher and workers go too, not at timeout_s."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    root = str(Path(__file__).resolve().parents[1])
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}  # the run's private folder goes here
    caller = subprocess.Popen(
        [sys.executable, "-c", _CALLER.format(root=root)], cwd=tmp_path, env=env
    )
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(started) < 3:  # launcher + 2 workers
            time.sleep(0.2)
            started = psutil.Process(caller.pid).children(recursive=True)
        assert len(started) >= 3, "the run did not start"
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
        gone_by = time.monotonic() + 10
        while time.monotonic() < gone_by and _alive(started):
            time.sleep(0.2)
        assert _alive(started) == []
        assert list(temp.iterdir()) == []  # the fw-dist-* folder went with them
    finally:
        for p in _alive(started):
            p.kill()
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def _alive(procs: list[Any]) -> list[Any]:
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stopped_run_writes_nothing_to_the_system_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from freeze_widgets.distributed import DistributedRunError
    from freeze_widgets.distributed.launcher import abort
    from tests.distributed_helpers import Misbehaving

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    stop = threading.Event()
    timer = threading.Timer(4.0, abort, args=(stop,))
    timer.start()
    try:
        with pytest.raises(DistributedRunError, match="stopped"):
            finetune(
                tiny_net(), Misbehaving("hang"), nproc=2, image_size=16, batch_size=4,
                timeout_s=100, stop=stop,
            )  # fmt: skip
    finally:
        timer.cancel()
    assert list(temp.iterdir()) == []  # no fw-dist-*, no torchelastic_*

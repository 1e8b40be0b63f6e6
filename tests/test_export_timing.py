"""The export report's latency: each engine in its own block, and a cheap default verification."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets.export import export_onnx


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One thread on both sides: stable figures on a small, shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    ).eval()


def median_ms(fn: Callable[[], Any], runs: int = 40, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_report_ratio_agrees_with_engines_timed_in_blocks(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = mlp()
    path = tmp_path / "mlp.onnx"
    x = torch.randn(16, 256)
    report = export_onnx(
        model, x, path, verify_batches=(16,), timing="thorough", timing_runs=40, warmup=5
    )
    assert report.ok, report
    (p,) = report.parity
    assert p.timed_runs == 40
    reported = p.exported_ms / p.eager_ms
    # Independently: a plain session, eager first in its block, then onnxruntime in its own.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    measured = median_ms(lambda: session.run(None, feed)) / median_ms(eager)
    assert abs(reported - measured) <= 0.2 * measured, (reported, measured)
    assert "each timed in its own block" in str(report)


@pytest.mark.slow
def test_default_verification_keeps_timing_within_its_budget(tmp_path: Path) -> None:
    report = export_onnx(mlp(), torch.randn(4, 256), tmp_path / "m.onnx")
    assert report.ok, report
    budget_ms = 0.1 * report.export_seconds * 1000.0 / 2
    first, *rest = report.parity
    assert [p.timed_runs for p in rest] == [0] * len(rest)  # quick: the first size only
    for p in [first]:
        assert p.timed_runs >= 1
        # A block stops once over budget: at most one run past it.
        for ms in (p.eager_ms, p.exported_ms):
            assert (p.timed_runs - 1) * ms <= budget_ms + ms * 2, (p, budget_ms)


def test_timing_off_and_bad_choice(tmp_path: Path) -> None:
    report = export_onnx(mlp(), torch.randn(4, 256), tmp_path / "m.onnx", timing="off")
    assert report.ok and all(p.timed_runs == 0 for p in report.parity)
    assert "not timed" in str(report)
    with pytest.raises(ValueError, match="timing must be one of"):
        export_onnx(mlp(), torch.randn(4, 256), tmp_path / "n.onnx", timing="slow")  # type: ignore[arg-type]

"""Exported model vs PyTorch eager: fresh inputs per batch size, output comparison, timing.

The onnxruntime import happens inside :func:`ort_runner`, so importing this module stays cheap.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .report import ExportReport, ParityResult

Runner = Callable[[Mapping[str, Any]], Sequence[Any]]
"""Runs the exported model on a name -> value feed and returns its flat outputs."""


def batch_of(inputs: Mapping[str, Any]) -> int | None:
    """Axis-0 size of the first non-scalar tensor input, or None if there is none."""
    for v in inputs.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return None


def default_batches(trace_batch: int | None, dynamic_batch: bool) -> list[int]:
    """Two batch sizes other than the traced one (a static batch can only be checked as is)."""
    if trace_batch is None or not dynamic_batch:
        return [trace_batch or 1]
    return [b for b in (1, 5, 3) if b != trace_batch][:2]


def resize_batch(
    inputs: Mapping[str, Any], batch: int, generator: torch.Generator
) -> dict[str, Any]:
    """Inputs with axis 0 resized to ``batch``: rows drawn from the example (ids stay valid),
    floats nudged so the rows differ."""
    out: dict[str, Any] = {}
    for name, v in inputs.items():
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            out[name] = v
            continue
        idx = torch.randint(0, v.shape[0], (batch,), generator=generator)
        rows = v.detach()[idx.to(v.device)].clone()
        if rows.is_floating_point():
            scale = float(v.detach().float().std()) if v.numel() > 1 else 1.0
            noise = torch.randn(rows.shape, generator=generator, dtype=torch.float32)
            rows = rows + (0.1 * (scale or 1.0) * noise).to(rows.dtype).to(rows.device)
        out[name] = rows
    return out


def flatten(output: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) tensor / tuple / list / dict output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in flatten(v)]
    if isinstance(output, tuple | list):
        return [t for v in output for t in flatten(v)]
    return []


def compare(
    exported: Sequence[Any], eager: Sequence[torch.Tensor], atol: float, rtol: float
) -> tuple[float, float, bool]:
    """(max abs diff, max rel diff where |eager| > atol, allclose) over all outputs."""
    if len(exported) != len(eager):
        return float("inf"), float("inf"), False
    max_abs = 0.0
    max_rel = 0.0
    ok = True
    for got_raw, want_raw in zip(exported, eager, strict=True):
        want = want_raw.detach().cpu()
        got = torch.as_tensor(got_raw).cpu()
        if got.shape != want.shape:
            return float("inf"), float("inf"), False
        if want.numel() == 0:
            continue
        got64 = got.to(torch.float64)
        want64 = want.to(torch.float64)
        diff = (got64 - want64).abs()
        max_abs = max(max_abs, float(diff.max()))
        big = want64.abs() > atol
        if bool(big.any()):
            max_rel = max(max_rel, float((diff[big] / want64.abs()[big]).max()))
        ok = ok and bool(torch.allclose(got64, want64, rtol=rtol, atol=atol, equal_nan=True))
    return max_abs, max_rel, ok


def paired_median_ms(
    first: Callable[[], Any], second: Callable[[], Any], runs: int, warmup: int
) -> tuple[float, float]:
    """Median milliseconds of two callables, timed alternately.

    Alternating run by run means both see the same machine load, so their ratio holds up
    on a busy machine better than timing one block after the other.
    """
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(max(runs, 1)):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def _parity_at(
    run: Runner,
    model: nn.Module,
    feed: Mapping[str, Any],
    report: ExportReport,
    timing: tuple[int, int],
) -> tuple[float, float, bool, float, float]:
    """(max abs, max rel, ok, eager ms, exported ms) of one feed."""
    with torch.inference_mode():
        eager = flatten(model(**feed))
    max_abs, max_rel, ok = compare(run(feed), eager, report.atol, report.rtol)

    def eager_call() -> Any:
        with torch.inference_mode():
            return model(**feed)

    eager_ms, exported_ms = paired_median_ms(eager_call, lambda: run(feed), *timing)
    return max_abs, max_rel, ok, eager_ms, exported_ms


def attach_parity(
    report: ExportReport,
    run: Runner,
    model: nn.Module,
    inputs: Mapping[str, Any],
    batches: Sequence[int],
    timing_runs: int,
    warmup: int,
) -> None:
    """Compare the exported ``run`` with eager ``model`` on fresh inputs at each batch size.

    Fills ``report.parity`` (with median latencies) and marks the report verified.
    """
    generator = torch.Generator().manual_seed(0)
    results = []
    for batch in batches:
        feed = resize_batch(inputs, batch, generator) if batch_of(inputs) else dict(inputs)
        figures = _parity_at(run, model, feed, report, (timing_runs, warmup))
        results.append(ParityResult(batch, *figures))
    report.parity = results
    report.verified = True


def ort_runner(path: Path) -> Runner:
    """An onnxruntime session on ``path``, fed only the tensors the graph takes as inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread budget as PyTorch, so the latency comparison is like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    expected = {i.name for i in session.get_inputs()}

    def run(feed: Mapping[str, Any]) -> Sequence[Any]:
        ort_feed = {
            n: v.detach().cpu().contiguous().numpy()
            for n, v in feed.items()
            if n in expected and isinstance(v, torch.Tensor)
        }
        return session.run(None, ort_feed)  # type: ignore[no-any-return]

    return run

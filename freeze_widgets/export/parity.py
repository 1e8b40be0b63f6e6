"""Exported model vs PyTorch eager: fresh inputs per batch size, output comparison, timing.

The onnxruntime import happens inside :func:`ort_runner`, so importing this module stays cheap.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freeze_widgets.export.report import ExportReport, ParityResult

Runner = Callable[[Mapping[str, Any]], Sequence[Any]]
"""Runs the exported model on a name -> value feed and returns its flat outputs."""


BatchAxes = Mapping[str, int | None]
"""Input name -> the axis that is the batch, or None for an input without one."""


def batch_of(inputs: Mapping[str, Any], axes: BatchAxes) -> int | None:
    """The example batch: the largest batch-axis size among batched inputs, or None."""
    sizes = [
        int(v.shape[axis])
        for name, v in inputs.items()
        if isinstance(v, torch.Tensor) and (axis := axes.get(name)) is not None
    ]
    return max(sizes, default=None)


def default_batches(trace_batch: int | None, dynamic_batch: bool) -> list[int]:
    """Two batch sizes other than the traced one (a static batch can only be checked as is)."""
    if trace_batch is None or not dynamic_batch:
        return [trace_batch or 1]
    # Small sizes: a verification forward at batch 5 cost more than the export on a busy CPU.
    return [b for b in (1, 3, 5) if b != trace_batch][:2]


def resize_batch(
    inputs: Mapping[str, Any], axes: BatchAxes, batch: int, generator: torch.Generator
) -> dict[str, Any]:
    """Inputs with the batch axis resized to ``batch``: rows drawn from the example (ids stay
    valid), floats nudged so the rows differ. Unbatched inputs are passed as they are."""
    out: dict[str, Any] = {}
    for name, v in inputs.items():
        axis = axes.get(name)
        if not isinstance(v, torch.Tensor) or axis is None:
            out[name] = v
            continue
        idx = torch.randint(0, v.shape[axis], (batch,), generator=generator)
        rows = v.detach().index_select(axis, idx.to(v.device)).clone()
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


@dataclass(frozen=True)
class Comparison:
    """Exported vs eager outputs: the worst error, absolute and relative to the output's scale."""

    max_abs: float
    max_rel: float  # max |diff| / max |eager|, the worst output (docs/design.md, trap 17)
    scale: float  # the smallest output scale, max |eager| of that output
    ok: bool
    too_small: bool
    non_finite: bool = False  # the eager outputs hold NaN/inf: agreeing on them proves nothing


_MISMATCH = Comparison(float("inf"), float("inf"), float("nan"), ok=False, too_small=False)


def judgeable_floor(dtype: torch.dtype) -> float:
    """Below this output scale a comparison says nothing: the values' own rounding step is
    subnormal (float32: about 1e-31), or they are zero."""
    if not dtype.is_floating_point:
        return 1.0  # integer outputs: an absolute difference of 1 is already a mismatch
    info = torch.finfo(dtype)
    return float(info.tiny / info.eps)


def _one_output(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float, float, bool]:
    """(max abs diff, scale, floor, NaNs agree) of one output pair."""
    got64, want64 = got.to(torch.float64), want.to(torch.float64)
    both_nan = got64.isnan() & want64.isnan()
    diff = (got64 - want64).abs().masked_fill(both_nan, 0.0)
    finite = want64[want64.isfinite()].abs()
    scale = float(finite.max()) if finite.numel() else 0.0
    max_abs = float(diff.max())
    return max_abs, scale, judgeable_floor(want.dtype), not diff.isnan().any()


def compare(exported: Sequence[Any], eager: Sequence[torch.Tensor], tolerance: float) -> Comparison:
    """Judge each output by ``max|diff| / max|eager|`` against ``tolerance``.

    An absolute tolerance passes anything when outputs are tiny (random-weight efficientnet
    gives about 1e-20; docs/design.md, trap 17), so the error is taken relative to each
    output's scale; an output whose scale is below :func:`judgeable_floor` is "too small to
    judge" and fails.
    """
    if len(exported) != len(eager):
        return _MISMATCH
    max_abs = max_rel = 0.0
    min_scale = float("inf")
    ok, too_small, non_finite = True, False, False
    for got_raw, want_raw in zip(exported, eager, strict=True):
        want = want_raw.detach().cpu()
        got = torch.as_tensor(got_raw).cpu()
        if got.shape != want.shape:
            return _MISMATCH
        if want.numel() == 0:
            continue
        abs_err, scale, floor, nan_ok = _one_output(got, want)
        rel = abs_err / max(scale, floor) if nan_ok else float("inf")
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel)
        min_scale = min(min_scale, scale)
        too_small = too_small or scale < floor
        non_finite = non_finite or not bool(want.isfinite().all())
        ok = ok and nan_ok and rel <= tolerance
    min_scale = min_scale if min_scale != float("inf") else float("nan")
    judged = not (too_small or non_finite)
    return Comparison(max_abs, max_rel, min_scale, ok and judged, too_small, non_finite)


@dataclass(frozen=True)
class Timing:
    """How latency is timed: ``runs`` per engine after ``warmup``, each engine in its own block.

    ``budget_s`` caps each block (after at least one run) so the default verification stays cheap
    next to the export; None times all ``runs`` (the thorough choice). ``runs == 0``: no timing.
    The parity check's own call on the same feed comes first, so ``warmup`` may be 0.
    """

    runs: int
    warmup: int
    budget_s: float | None = None
    batches: int | None = None  # how many of the verified batch sizes to time (None: all)


def block_median_ms(fn: Callable[[], Any], timing: Timing) -> tuple[float, int]:
    """(median ms, runs timed) of ``fn`` called in one block after its warm-up.

    One engine at a time: alternating eager and onnxruntime runs while onnxruntime's threads
    spin-wait slows the eager side 3-40x on a small machine (docs/design.md, trap 25).
    """
    for _ in range(timing.warmup):
        fn()
    times: list[float] = []
    block = time.perf_counter()
    while len(times) < max(timing.runs, 1):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
        spent = time.perf_counter() - block
        if timing.budget_s is not None and spent > timing.budget_s:
            break
    return statistics.median(times), len(times)


def _parity_at(
    run: Runner,
    model: nn.Module,
    feed: Mapping[str, Any],
    tolerance: float,
    timing: Timing,
) -> tuple[Comparison, float, float, int]:
    """(comparison, eager ms, exported ms, runs timed) of one feed; NaN ms when not timed."""
    with torch.inference_mode():
        eager = flatten(model(**feed))
    comparison = compare(run(feed), eager, tolerance)
    if timing.runs == 0:
        return comparison, float("nan"), float("nan"), 0

    def eager_call() -> Any:
        with torch.inference_mode():
            return model(**feed)

    eager_ms, n = block_median_ms(eager_call, timing)
    exported_ms, m = block_median_ms(lambda: run(feed), timing)
    return comparison, eager_ms, exported_ms, min(n, m)


def attach_parity(
    report: ExportReport,
    run: Runner,
    model: nn.Module,
    inputs: Mapping[str, Any],
    axes: BatchAxes,
    batches: Sequence[int],
    timing: Timing,
) -> None:
    """Compare the exported ``run`` with eager ``model`` on fresh inputs at each batch size.

    Fills ``report.parity`` (with median latencies, each engine timed in its own block) and
    marks the report verified.
    """
    generator = torch.Generator().manual_seed(0)
    results = []
    for i, batch in enumerate(batches):
        feed = resize_batch(inputs, axes, batch, generator)
        timed = timing if timing.batches is None or i < timing.batches else Timing(0, 0)
        c, eager_ms, exported_ms, runs = _parity_at(run, model, feed, report.tolerance, timed)
        results.append(
            ParityResult(
                batch,
                c.max_abs,
                c.max_rel,
                c.ok,
                eager_ms,
                exported_ms,
                c.scale,
                c.too_small,
                c.non_finite,
                runs,
            )
        )
    report.parity = results
    report.verified = True


def ort_runner(path: Path) -> Runner:
    """An onnxruntime session on ``path``, fed only the tensors the graph takes as inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread budget as PyTorch, so the latency comparison is like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # No spin-waiting between runs: spinning threads steal the cores eager PyTorch needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
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

"""Golden-text tests for ExportReport: reports built by hand with fixed numbers, exact text."""

from __future__ import annotations

from pathlib import Path

import pytest

from freeze_widgets.base.wording import format_bytes
from freeze_widgets.export import ExportReport, ParityResult


def onnx_report() -> ExportReport:
    """A verified dynamo export of a masked linear layer: everything passed."""
    return ExportReport(
        path=Path("exports/masked.onnx"),
        exporter="onnx-dynamo",
        fallback_reason=None,
        opset=18,
        input_names=["x"],
        output_names=["output"],
        bound_names=["mask"],
        graph_inputs=["x"],
        initializer_count=3,
        file_bytes=1536,
        export_seconds=1.234,
        parity=[
            ParityResult(
                batch=1, max_abs=1.5e-7, max_rel=2.5e-6, ok=True, eager_ms=2.0, exported_ms=0.5
            ),
            ParityResult(
                batch=5, max_abs=3e-7, max_rel=4e-6, ok=True, eager_ms=4.0, exported_ms=1.0
            ),
        ],
        verified=True,
    )


def test_str_of_passing_onnx_report() -> None:
    assert str(onnx_report()) == (
        "file               exports/masked.onnx\n"
        "exporter           onnx-dynamo\n"
        "opset              18\n"
        "inputs             x\n"
        "graph inputs       x\n"
        "bound              mask\n"
        "outputs            output\n"
        "initializers       3\n"
        "file size          1.50 KiB\n"
        "export time        1.23 s\n"
        "parity @ batch 1   ok: max rel 2.50e-06 of output scale (tolerance 0.0001), max abs "
        "1.50e-07\n"
        "latency @ batch 1  eager 2.00 ms, onnxruntime 0.50 ms (0.25x)\n"
        "parity @ batch 5   ok: max rel 4.00e-06 of output scale (tolerance 0.0001), max abs "
        "3.00e-07\n"
        "latency @ batch 5  eager 4.00 ms, onnxruntime 1.00 ms (0.25x)\n"
        "status             OK"
    )


def test_str_of_torchscript_fallback_with_mismatch() -> None:
    report = ExportReport(
        path=Path("out/model.pt"),
        exporter="torchscript-trace",
        fallback_reason="RuntimeError: cannot script <lambda>",
        opset=None,
        input_names=["x"],
        output_names=["output_0", "output_1"],
        bound_names=[],
        graph_inputs=["x"],
        initializer_count=0,
        file_bytes=3 * 1024 * 1024,
        export_seconds=0.5,
        parity=[
            ParityResult(
                batch=1, max_abs=0.25, max_rel=0.5, ok=False, eager_ms=1.0, exported_ms=3.0
            ),
            # A zero eager time (too fast for the clock) gives no ratio rather than a crash.
            ParityResult(batch=3, max_abs=0.0, max_rel=0.0, ok=True, eager_ms=0.0, exported_ms=3.0),
        ],
        tolerance=1e-5,
        verified=True,
    )
    assert str(report) == (
        "file               out/model.pt\n"
        "exporter           torchscript-trace\n"
        "fallback reason    RuntimeError: cannot script <lambda>\n"
        "opset              -\n"
        "inputs             x\n"
        "graph inputs       x\n"
        "bound              -\n"
        "outputs            output_0, output_1\n"
        "initializers       0\n"
        "file size          3.00 MiB\n"
        "export time        0.50 s\n"
        "parity @ batch 1   MISMATCH: max rel 5.00e-01 of output scale (tolerance 1e-05), max "
        "abs 2.50e-01\n"
        "latency @ batch 1  eager 1.00 ms, torchscript 3.00 ms (3.00x)\n"
        "parity @ batch 3   ok: max rel 0.00e+00 of output scale (tolerance 1e-05), max abs "
        "0.00e+00\n"
        "latency @ batch 3  eager 0.00 ms, torchscript 3.00 ms (nanx)\n"
        "status             FAILED"
    )
    assert not report.ok
    html = report._repr_html_()
    assert "<td style='text-align:left'>RuntimeError: cannot script &lt;lambda&gt;</td>" in html
    assert "<lambda>" not in html


def test_str_of_unverified_report_with_leaked_bound_name() -> None:
    report = ExportReport(
        path=Path("m.onnx"),
        exporter="onnx-torchscript",
        fallback_reason=None,
        opset=17,
        input_names=["x"],
        output_names=["output"],
        bound_names=["mask", "scale"],
        graph_inputs=["x", "mask"],
        initializer_count=2,
        file_bytes=512,
        export_seconds=2.0,
    )
    assert report.bound_leaked == ["mask"]
    assert str(report) == (
        "file                         m.onnx\n"
        "exporter                     onnx-torchscript\n"
        "opset                        17\n"
        "inputs                       x\n"
        "graph inputs                 x, mask\n"
        "bound                        mask, scale\n"
        "outputs                      output\n"
        "initializers                 2\n"
        "file size                    512 B\n"
        "export time                  2.00 s\n"
        "verified                     no\n"
        "bound names in graph inputs  mask\n"
        "status                       FAILED"
    )


def test_str_of_tiny_outputs_notes_error_and_freeze_marks() -> None:
    """Outputs too small to judge fail; notes, freeze marks and a verification error show."""
    report = onnx_report()
    report.parity = [
        ParityResult(
            batch=1,
            max_abs=1e-39,
            max_rel=0.5,
            ok=False,
            eager_ms=2.0,
            exported_ms=1.0,
            scale=2e-38,
            too_small=True,
        )
    ]
    report.notes = ["torch.compile wrapper (OptimizedModule): exported its ._orig_mod"]
    report.freeze_marked = (2, 1)
    report.error = "RuntimeError: shape mismatch (the file was written; this step failed)"
    assert str(report) == (
        "file               exports/masked.onnx\n"
        "exporter           onnx-dynamo\n"
        "note               torch.compile wrapper (OptimizedModule): exported its ._orig_mod\n"
        "opset              18\n"
        "inputs             x\n"
        "graph inputs       x\n"
        "bound              mask\n"
        "outputs            output\n"
        "initializers       3 tensors stored in the file: 2 frozen weights, 1 trainable weights "
        "(marked so in the file), 0 buffers and constants\n"
        "file size          1.50 KiB\n"
        "export time        1.23 s\n"
        "parity @ batch 1   TOO SMALL TO JUDGE: outputs at most 2.0e-38 in size (max abs 1.00e-39); "
        "check with trained weights or real inputs\n"
        "latency @ batch 1  eager 2.00 ms, onnxruntime 1.00 ms (0.50x)\n"
        "error              RuntimeError: shape mismatch (the file was written; this step failed)\n"
        "status             FAILED"
    )
    assert not report.ok


def test_ok_needs_verification_and_every_parity_entry() -> None:
    report = onnx_report()
    assert report.ok
    report.parity[1].ok = False
    assert not report.ok
    report.parity[1].ok = True
    report.checker_ok = False
    assert not report.ok
    report.checker_ok = True
    report.error = "ValueError: verification crashed"
    assert not report.ok
    report.error = None
    assert report.ok
    report.verified = False
    assert not report.ok


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (1024**2 - 1, "1024 KiB"),
        (5 * 1024**2, "5.00 MiB"),
        (46_800_000, "44.6 MiB"),
        (5 * 1024**3, "5.00 GiB"),
        (2048 * 1024**3, "2.00 TiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_latency_says_how_it_was_timed_and_small_ratios_keep_digits() -> None:
    report = onnx_report()
    report.parity = [
        ParityResult(
            batch=5,
            max_abs=0.0,
            max_rel=0.0,
            ok=True,
            eager_ms=50.0,
            exported_ms=2.05,
            timed_runs=7,
        )
    ]
    line = dict(report.to_rows())["latency @ batch 5"]
    assert line == (
        "eager 50.00 ms, onnxruntime 2.05 ms (0.041x), each timed in its own block after "
        "warm-up, median of 7 runs"
    )
    report.parity = [ParityResult(5, 0.0, 0.0, True, float("nan"), float("nan"))]
    assert dict(report.to_rows())["latency @ batch 5"] == (
        "not timed (timing='thorough' times every batch size)"
    )

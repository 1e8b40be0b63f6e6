"""Partial-bound export: fix some forward arguments, export the rest to ONNX or TorchScript.

``bind(model, mask=m)`` wraps the model in a :class:`BoundModule` whose forward takes only the
remaining arguments, under their original names (``binding``). ``export_onnx`` (``onnx``) exports,
checks the file with ``onnx.checker`` and compares onnxruntime with PyTorch eager at batch sizes
other than the one traced; ``export_torchscript`` (``torchscript``) does the same for TorchScript.
Both run one shared skeleton (``_common``) and return an :class:`ExportReport` (``report``) whose
parity figures come from ``parity`` (judged against the output's scale). An ONNX file carries
the freeze (``onnx_freeze``): the FreezeSpec JSON in its metadata and "frozen" / "trainable" on
each weight. See docs/export.md.

Heavy imports (onnx, onnxruntime) happen inside the functions that need them.
"""

from __future__ import annotations

from freeze_widgets.export.binding import BoundModule, bind
from freeze_widgets.export.inputs import ExampleInputs
from freeze_widgets.export.onnx import OnnxExporter, export_onnx
from freeze_widgets.export.report import ExporterName, ExportReport, ParityResult
from freeze_widgets.export.torchscript import TorchScriptMethod, export_torchscript

__all__ = [
    "BoundModule",
    "ExampleInputs",
    "ExportReport",
    "ExporterName",
    "OnnxExporter",
    "ParityResult",
    "TorchScriptMethod",
    "bind",
    "export_onnx",
    "export_torchscript",
]

"""Read a checkpoint's tensors one at a time: torch.save files, safetensors, DCP folders.

Each reader lists names cheaply and loads one tensor per :meth:`TensorSource.get`, so checking a
large checkpoint never holds two copies of the model: safetensors and DCP read only the bytes of
the tensor asked for, and ``torch.save`` files are memory-mapped. What cannot be read (a
truncated file, a shard named by the index but absent) is a ``problem``, not an exception.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from freeze_widgets.base.wording import first_line

__all__ = ["TensorSource", "UnreadableTensor", "open_source"]

SAFETENSORS_INDEX = "model.safetensors.index.json"


class UnreadableTensor(Exception):
    """One tensor that a checkpoint lists but cannot deliver (missing shard, cut-off bytes)."""


@dataclass
class TensorSource:
    """Names, and a loader for one tensor at a time, of one checkpoint.

    Attributes:
        format: ``"module"``, ``"torch"``, ``"safetensors"``, ``"safetensors-sharded"``,
            ``"dcp"`` or ``"peft"``.
        shapes: Name -> shape, read from headers or metadata without loading the tensor.
        load: Loads one tensor by name; raises :class:`UnreadableTensor`.
        problems: What is wrong with the checkpoint as a whole (each names the file).
        extra: Format-specific data (a PEFT folder's ``adapter_config.json``).
    """

    format: str
    shapes: dict[str, tuple[int, ...]]
    load: Callable[[str], torch.Tensor]
    problems: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        return self.load(name)


def open_source(where: nn.Module | str | Path) -> TensorSource:
    """A reader for a model (its state dict), a file, or a folder, chosen by what is there.

    Raises:
        FileNotFoundError: ``where`` does not exist.
        ValueError: It is not a format this reads, naming the formats that are.
    """
    if isinstance(where, nn.Module):
        state = where.state_dict()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        return TensorSource("module", shapes, lambda name: state[name])
    path = Path(where)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _open_dir(path)
    if path.name.endswith(".index.json"):
        return _sharded(path)
    if path.suffix == ".safetensors":
        return _safetensors(path)
    return _torch_file(path)


def _open_dir(path: Path) -> TensorSource:
    singles = sorted(path.glob("*.safetensors"))
    if (path / "adapter_config.json").is_file():
        return _peft(path)
    if (path / SAFETENSORS_INDEX).is_file():
        return _sharded(path / SAFETENSORS_INDEX)
    if (path / ".metadata").is_file():
        return _dcp(path)
    if len(singles) != 1:
        raise ValueError(
            f"{path} holds no checkpoint this reads: expected adapter_config.json (PEFT), "
            f"{SAFETENSORS_INDEX}, .metadata (torch.distributed.checkpoint) or one .safetensors"
        )
    return _safetensors(singles[0])


def _broken(fmt: str, problem: str) -> TensorSource:
    def load(name: str) -> torch.Tensor:
        raise UnreadableTensor(problem)

    return TensorSource(fmt, {}, load, [problem])


def _safetensors(path: Path) -> TensorSource:
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt")
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for a cut-off file
        return _broken("safetensors", f"{path.name} cannot be read: {first_line(exc, 200)}")

    def load(name: str) -> torch.Tensor:
        try:
            tensor: torch.Tensor = handle.get_tensor(name)
            return tensor
        except Exception as exc:
            raise UnreadableTensor(f"{path.name}: {first_line(exc, 200)}") from exc

    return TensorSource("safetensors", shapes, load)


def _sharded(index: Path) -> TensorSource:
    try:
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _broken("safetensors-sharded", f"{index.name} is not a shard index: {exc}")
    shards: dict[str, TensorSource] = {}
    problems: list[str] = []
    for file in sorted(set(weight_map.values())):
        if not (index.parent / file).is_file():
            count = sum(1 for f in weight_map.values() if f == file)
            problems.append(f"shard {file} named by {index.name} is missing ({count} tensors)")
            shards[file] = _broken("safetensors", f"shard {file} is missing")
            continue
        shards[file] = _safetensors(index.parent / file)
        problems += shards[file].problems
    shapes = {k: shards[f].shapes.get(k, ()) for k, f in weight_map.items()}
    for file, source in shards.items():  # a shard holding a tensor the index does not name
        problems += [
            f"{file} holds {k!r}, which {index.name} does not list"
            for k in source.shapes
            if k not in weight_map
        ]

    def load(name: str) -> torch.Tensor:
        return shards[weight_map[name]].get(name)

    return TensorSource("safetensors-sharded", shapes, load, problems)


def _torch_file(path: Path) -> TensorSource:
    try:  # memory-mapped: a tensor's bytes are read when it is used
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # zip or pickle errors for a cut-off file, several types
        return _broken("torch", f"{path.name} cannot be read: {first_line(exc, 200)}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning-style wrapper
    if not isinstance(state, dict):
        return _broken("torch", f"{path.name} holds a {type(state).__name__}, not a state dict")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return TensorSource(
        "torch", {k: tuple(v.shape) for k, v in tensors.items()}, lambda name: tensors[name]
    )


def _dcp(path: Path) -> TensorSource:
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import load

    try:
        meta = FileSystemReader(str(path)).read_metadata()
    except Exception as exc:
        return _broken("dcp", f"{path}/.metadata cannot be read: {first_line(exc, 200)}")
    entries = {
        k: v for k, v in meta.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)
    }
    problems = []
    files = {getattr(i, "relative_path", None) for i in (meta.storage_data or {}).values()}
    for file in sorted(f for f in files if f):
        if not (path / file).is_file():
            problems.append(f"data file {file} named by .metadata is missing")

    def load_one(name: str) -> torch.Tensor:
        md = entries[name]
        out = torch.empty(md.size, dtype=md.properties.dtype)
        try:  # reads only this tensor's chunks; one process, no group needed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                load({name: out}, storage_reader=FileSystemReader(str(path)), no_dist=True)
        except (Exception, CheckpointException) as exc:  # the latter is a BaseException
            raise UnreadableTensor(f"{path.name}: {first_line(exc, 200)}") from exc
        return out

    return TensorSource("dcp", {k: tuple(v.size) for k, v in entries.items()}, load_one, problems)


def _peft(path: Path) -> TensorSource:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _broken("peft", f"adapter_config.json cannot be read: {exc}")
    weights = path / "adapter_model.safetensors"
    if weights.is_file():
        inner = _safetensors(weights)
    elif (path / "adapter_model.bin").is_file():
        inner = _torch_file(path / "adapter_model.bin")
    else:
        return _broken("peft", f"{path} has adapter_config.json but no adapter_model file")
    return TensorSource("peft", inner.shapes, inner.load, inner.problems, {"config": config})

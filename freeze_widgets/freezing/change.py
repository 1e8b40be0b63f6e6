"""FreezeChange: the record every freeze / unfreeze / BatchNorm-policy call returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FreezeChange"]


@dataclass(frozen=True)
class FreezeChange:
    """What one freeze / unfreeze call changed.

    Attributes:
        frozen: Parameter names whose ``requires_grad`` went True -> False.
        unfrozen: Parameter names whose ``requires_grad`` went False -> True.
        batchnorm: ``(path, before, after)`` for each BatchNorm layer whose policy changed.
        replaced: Paths where a module object was swapped (the "frozen" BatchNorm policy).
    """

    frozen: tuple[str, ...] = ()
    unfrozen: tuple[str, ...] = ()
    batchnorm: tuple[tuple[str, str, str], ...] = ()
    replaced: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.frozen or self.unfrozen or self.batchnorm)

    def __str__(self) -> str:
        parts = []
        if self.frozen:
            parts.append(f"froze {len(self.frozen)} parameter tensors")
        if self.unfrozen:
            parts.append(f"unfroze {len(self.unfrozen)} parameter tensors")
        if self.batchnorm:
            parts.append(f"{len(self.batchnorm)} BatchNorm layers changed policy")
        return ", ".join(parts) or "nothing changed"

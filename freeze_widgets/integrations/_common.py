"""What both adapters do: apply a spec, audit the optimizers, guard the steps, log the report."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.checks.findings import Finding, format_findings
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.verify.guard import FreezeGuard, GuardReport
from freeze_widgets.verify.ranks import check_after_wrap

log = logging.getLogger("freeze_widgets.integrations")


def unwrap(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside a wrapper (accelerate's AcceleratedOptimizer, Lightning's)."""
    inner = getattr(optimizer, "optimizer", None)
    while isinstance(inner, torch.optim.Optimizer):
        optimizer, inner = inner, getattr(inner, "optimizer", None)
    return optimizer


class GuardSessionOwner:
    """The constructor and the ``findings`` / ``report`` properties both callbacks share.

    Listed before the framework's callback class, so its ``__init__`` runs and calls theirs.
    """

    def __init__(
        self,
        spec: FreezeSpec | None = None,
        *,
        raise_on_violation: bool = False,
        keep_copies: bool = False,
    ) -> None:
        super().__init__()
        self._session = GuardSession(
            spec, raise_on_violation=raise_on_violation, keep_copies=keep_copies
        )

    @property
    def findings(self) -> list[Finding]:
        """What the optimizer audit found at train start."""
        return self._session.findings

    @property
    def report(self) -> GuardReport | None:
        """The guard's report, once training ended (or failed)."""
        return self._session.report


class GuardSession:
    """One training run's checks, shared by the Lightning and transformers callbacks.

    Attributes:
        findings: What :func:`audit_optimizer` found at train start (all optimizers).
        report: The guard's report, set at train end (or on an exception).
    """

    def __init__(
        self, spec: FreezeSpec | None, *, raise_on_violation: bool, keep_copies: bool
    ) -> None:
        if spec is not None and not isinstance(spec, FreezeSpec):
            raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
        self.spec = spec
        self.raise_on_violation = raise_on_violation
        self.keep_copies = keep_copies
        self.applied = False
        self.findings: list[Finding] = []
        self.report: GuardReport | None = None
        self.guard: FreezeGuard | None = None

    def apply_spec(self, model: nn.Module) -> None:
        """Apply the spec once (before the optimizer is built, where the framework allows)."""
        if self.spec is not None and not self.applied:
            change = self.spec.apply(model)
            log.info("FreezeSpec applied: %s", change)
        self.applied = True

    def begin(
        self,
        model: nn.Module,
        optimizers: Iterable[torch.optim.Optimizer],
        wrapped: nn.Module | None = None,
    ) -> None:
        """Audit the optimizers and the wrapped model against the freeze, then guard the steps.

        ``wrapped`` is what the framework's strategy made of ``model`` (DDP, FSDP); a frozen
        parameter it made trainable again is a ``trainable_after_wrap`` finding.

        A guard left active by a run that failed without telling the callback (transformers
        has no exception event) is ended first, so its hooks never carry into this run.
        """
        self.abort()
        self.apply_spec(model)
        opts = [unwrap(o) for o in optimizers]
        # One audit over all optimizers: a tensor trained by any of them is in an optimizer.
        self.findings = audit_optimizer(model, opts) if opts else []
        if self.spec is not None:  # the strategy has wrapped the model by now
            self.findings += check_after_wrap(wrapped if wrapped is not None else model, self.spec)
        if self.findings:
            log.warning("Optimizer audit:\n%s", format_findings(self.findings))
        else:
            log.info("Optimizer audit: no findings.")
        allow = self.spec is not None and self.spec.bn == "train"
        self.guard = FreezeGuard(
            model,
            opts or None,
            raise_on_violation=self.raise_on_violation,
            keep_copies=self.keep_copies,
            allow_bn_stats=allow,
        ).start()

    def end(self) -> GuardReport | None:
        """Final check, hooks removed, report stored and logged."""
        if self.guard is None:
            return self.report
        guard, self.guard = self.guard, None
        try:
            guard.stop()
        finally:
            self.report = guard.report
            (log.info if self.report.ok else log.warning)("%s", self.report)
        return self.report

    def abort(self) -> None:
        """Remove the hooks without a final check (training is failing already)."""
        if self.guard is not None:
            guard, self.guard = self.guard, None
            guard.abort()
            self.report = guard.report

"""audit_optimizer: the three mismatches between an optimizer and a freeze, and a clean setup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.freezing.targets import freeze, unfreeze

from .conftest import make_seq_bn


def test_clean_setup_has_no_findings() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    assert audit_optimizer(model, opt) == []


def test_frozen_parameters_still_in_optimizer_with_state_and_decay() -> None:
    model = make_seq_bn()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
    x = torch.randn(4, 32)
    model(x).sum().backward()
    opt.step()  # gives every parameter Adam state
    freeze(model, "0")  # clears .grad, but the optimizer still holds the parameters
    findings = audit_optimizer(model, opt)
    assert [(f.kind, f.path) for f in findings] == [
        ("frozen_in_optimizer", "0.weight"),
        ("frozen_in_optimizer", "0.bias"),
    ]
    assert "momentum state" in findings[0].message
    assert "weight_decay=0.01" in findings[0].message
    assert "has a .grad" not in findings[0].message
    assert "requires_grad" in findings[0].fix


def test_frozen_param_without_state_is_reported_as_harmless_for_now() -> None:
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    freeze(model, "3")
    findings = audit_optimizer(model, opt)
    assert {f.path for f in findings} == {"3.weight", "3.bias"}
    assert all("harmless while its .grad stays None" in f.message for f in findings)


def test_unfrozen_parameters_missing_from_optimizer() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    unfreeze(model, "1")  # the classic: unfreeze without add_param_group
    findings = audit_optimizer(model, opt)
    assert [(f.kind, f.path) for f in findings] == [
        ("trainable_not_in_optimizer", "1.weight"),
        ("trainable_not_in_optimizer", "1.bias"),
    ]
    assert "add_param_group" in findings[0].fix
    opt.add_param_group({"params": list(model[1].parameters())})
    assert audit_optimizer(model, opt) == []


def test_parameter_in_two_groups() -> None:
    # torch refuses duplicates in the constructor and add_param_group; they appear when groups
    # are edited by hand, which is exactly what this check is for.
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.param_groups.append({**opt.param_groups[0], "params": [model[3].bias]})
    (finding,) = audit_optimizer(model, opt)
    assert (finding.kind, finding.path) == ("param_in_two_groups", "3.bias")
    assert "param group 0 and again in param group 1" in finding.message


def test_foreign_parameter_named_by_group_and_index() -> None:
    model = make_seq_bn()
    stray = nn.Parameter(torch.zeros(3), requires_grad=False)
    opt = torch.optim.SGD([*model.parameters(), stray], lr=0.1)
    (finding,) = audit_optimizer(model, opt)
    assert finding.path == "param_groups[0].params[6]"


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model"):
        audit_optimizer(None, torch.optim.SGD([nn.Parameter(torch.ones(1))]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer"):
        audit_optimizer(nn.Linear(1, 1), None)  # type: ignore[arg-type]

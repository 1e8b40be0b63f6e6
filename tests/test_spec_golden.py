"""Golden text: FreezeSpec.to_code() is code users paste into their scripts, so it is pinned."""

from __future__ import annotations

from freeze_widgets import FreezeSpec


def test_to_code_golden_eval_policy() -> None:
    expected = "\n".join(
        [
            "# Freeze reproduced without freeze_widgets; run with `model` in scope.",
            "",
            "frozen_paths = [",
            "    'layer1',",
            "    'fc.bias',",
            "]",
            "",
            "def is_frozen(n):",
            '    return any(n == f or n.startswith(f + ".") for f in frozen_paths)',
            "",
            "# Collect ids first: a tied parameter is frozen if any of its names is.",
            "frozen_ids = {",
            "    id(p) for n, p in model.named_parameters(remove_duplicate=False) if is_frozen(n)",
            "}",
            "for p in model.parameters():",
            "    p.requires_grad_(id(p) not in frozen_ids)",
            "    if id(p) in frozen_ids:",
            "        p.grad = None  # a stale gradient would still move it under momentum",
            "",
            "import torch",
            "",
            "",
            "class KeepInEval:",
            '    """Replaces a frozen BatchNorm\'s train(): model.train() leaves it in eval.',
            "",
            "    A class instance rather than a lambda, so torch.save(model) still pickles.",
            '    """',
            "",
            "    def __init__(self, module):",
            "        self.module = module",
            "",
            "    def __call__(self, mode=True):",
            "        self.module.training = False",
            "        return self.module",
            "",
            "",
            "# Frozen BatchNorm layers keep their running statistics: eval mode that survives",
            "# model.train(). Every name of a shared layer is checked.",
            "for n, m in model.named_modules(remove_duplicate=False):",
            "    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and is_frozen(n):",
            "        m.eval()",
            '        m.__dict__["train"] = KeepInEval(m)',
        ]
    )
    assert FreezeSpec(frozen=["layer1", "fc.bias"], bn="eval").to_code() == expected + "\n"


def test_to_code_train_policy_leaves_batchnorm_alone() -> None:
    code = FreezeSpec(frozen=["layer1"], bn="train").to_code()
    assert "KeepInEval" not in code and "m.eval()" not in code
    assert code.splitlines()[:5] == [
        "# Freeze reproduced without freeze_widgets; run with `model` in scope.",
        "",
        "frozen_paths = [",
        "    'layer1',",
        "]",
    ]

"""The Lightning and transformers adapters in short real runs (tiny model, CPU, a few steps)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.verify.guard import FrozenWeightMoved

from .conftest import make_seq_bn


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 32, generator=g), torch.randint(0, 2, (n,), generator=g)


# --------------------------------------------------------------------------- Lightning


def _lightning_module(all_params: bool) -> Any:
    pl = pytest.importorskip("lightning.pytorch")

    class Module(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = make_seq_bn()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            params = [p for p in self.parameters() if all_params or p.requires_grad]
            return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)

        def train_dataloader(self) -> Any:
            x, y = _data()
            return torch.utils.data.DataLoader(list(zip(x, y, strict=True)), batch_size=8)

    return Module()


def _fit(module: Any, callback: Any, tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(module)


def test_lightning_callback_applies_spec_audits_and_guards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from freeze_widgets.integrations.lightning import FreezeGuardCallback

    module = _lightning_module(all_params=False)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    callback = FreezeGuardCallback(FreezeSpec(("net.0", "net.1")))
    with caplog.at_level(logging.INFO, logger="freeze_widgets.integrations"):
        _fit(module, callback, tmp_path)
    assert callback.findings == []
    assert callback.report is not None and callback.report.ok
    assert callback.report.steps == 3
    assert "nothing moved" in caplog.text
    after = dict(module.named_parameters())
    assert torch.equal(before["net.0.weight"], after["net.0.weight"])
    assert not torch.equal(before["net.3.weight"], after["net.3.weight"])


def test_lightning_callback_catches_frozen_params_in_optimizer(tmp_path: Path) -> None:
    from freeze_widgets.integrations.lightning import FreezeGuardCallback

    module = _lightning_module(all_params=True)  # the optimizer gets the frozen ones too
    for p in module.net[1].parameters():
        p.requires_grad_(False)  # by hand: the BatchNorm keeps training its statistics
    callback = FreezeGuardCallback(raise_on_violation=True)
    with pytest.raises(FrozenWeightMoved) as info:
        _fit(module, callback, tmp_path)
    assert {f.path for f in callback.findings} == {"net.1.weight", "net.1.bias"}
    assert info.value.violation.step == 1
    assert info.value.violation.cause == "bn_train_mode"
    assert not any(o._optimizer_step_post_hooks for o in [module.optimizers().optimizer])


# --------------------------------------------------------------------------- transformers


class _HFNet(nn.Module):
    """What a Trainer accepts: keyword inputs, a dict with the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_seq_bn()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def _train_hf(model: nn.Module, callbacks: list[Any], tmp_path: Path, **args: Any) -> None:
    """Three steps of a transformers Trainer on CPU; ``args`` add to its TrainingArguments."""
    transformers = pytest.importorskip("transformers")
    x, y = _data()
    training_args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=8,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **args,
    )
    dataset = [{"x": xi, "labels": yi} for xi, yi in zip(x, y, strict=True)]
    trainer = transformers.Trainer(
        model=model, args=training_args, train_dataset=dataset, callbacks=callbacks
    )
    trainer.train()


def test_trainer_callback_applies_spec_before_the_optimizer(tmp_path: Path) -> None:
    from freeze_widgets.integrations.transformers import FreezeGuardTrainerCallback

    model = _HFNet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    callback = FreezeGuardTrainerCallback(FreezeSpec(("net.0", "net.1")), keep_copies=True)
    _train_hf(model, [callback], tmp_path, learning_rate=0.01, weight_decay=0.1)
    assert callback.findings == []  # the Trainer built its optimizer after the freeze
    assert callback.report is not None and callback.report.ok, str(callback.report)
    assert callback.report.steps == 3
    after = dict(model.named_parameters())
    assert torch.equal(before["net.1.weight"], after["net.1.weight"])
    assert not torch.equal(before["net.3.weight"], after["net.3.weight"])


def test_trainer_callback_reports_an_in_place_write(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from freeze_widgets.integrations.transformers import FreezeGuardTrainerCallback

    class Vandal(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 2:
                with torch.no_grad():
                    kw["model"].net[0].weight.add_(1.0)

    model = _HFNet()
    guard = FreezeGuardTrainerCallback(FreezeSpec(("net.0",)), keep_copies=True)
    _train_hf(model, [guard, Vandal()], tmp_path)
    assert guard.report is not None
    (v,) = guard.report.violations
    assert (v.path, v.step, v.cause) == ("net.0.weight", 3, "external_write")
    assert v.max_abs_diff == pytest.approx(1.0)


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize(
    ("module", "name"),
    [("lightning", "FreezeGuardCallback"), ("transformers", "FreezeGuardTrainerCallback")],
)
def test_both_callbacks_check_the_spec_and_start_empty(module: str, name: str) -> None:
    pytest.importorskip("lightning.pytorch" if module == "lightning" else module)
    cls = getattr(importlib.import_module(f"freeze_widgets.integrations.{module}"), name)
    with pytest.raises(TypeError, match=r"spec must be a FreezeSpec or None; got str"):
        cls("net.0")
    callback = cls(FreezeSpec(("net.0",)), raise_on_violation=True)
    assert callback.findings == [] and callback.report is None
    with pytest.raises(TypeError):
        cls(FreezeSpec(("net.0",)), True)  # raise_on_violation is keyword-only

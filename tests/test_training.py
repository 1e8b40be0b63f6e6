"""finetune(): frozen weights never move, BatchNorm policies hold, and the report says so."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from freeze_widgets import finetune, synthetic_dataset
from freeze_widgets.freezing.targets import bn_state, freeze, unfreeze
from freeze_widgets.training import FineTuneReport, NonFiniteLossError, StepEvent
from freeze_widgets.training.prefix import find_chain as _find_chain

# --------------------------------------------------------------------------- helpers


class TinyConv(nn.Module):
    """A ResNet-shaped chain (flatten before the head happens in forward, not in a child)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class Skip(nn.Module):
    """A forward that is not a chain of its children (a residual around ``body``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(32, 32)
        self.body = nn.Linear(32, 32)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.fc(x + self.body(x))


class NaNAfter(nn.Module):
    """Produces NaN logits from the ``at``-th training-mode forward call on.

    (finetune's own check of the data runs one forward in eval mode first; it is not a step.)
    """

    def __init__(self, at: int) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 2)
        self.calls = 0
        self.at = at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += int(self.training)
        out = self.fc(x)
        return out * float("nan") if self.calls >= self.at else out


def tiny_conv(num_classes: int = 4) -> TinyConv:
    torch.manual_seed(0)
    return TinyConv(num_classes)


def vectors(n: int = 64, seed: int = 0) -> TensorDataset:
    """A linearly separable two-class set for the 32-feature models."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state


def small_images(n: int = 32, classes: int = 4, size: int = 16, seed: int = 0) -> object:
    return synthetic_dataset(n=n, num_classes=classes, image_size=size, seed=seed)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_dataset_is_deterministic_balanced_and_sized() -> None:
    a = synthetic_dataset(n=40, num_classes=4, image_size=24, seed=3)
    b = synthetic_dataset(n=40, num_classes=4, image_size=24, seed=3)
    c = synthetic_dataset(n=40, num_classes=4, image_size=24, seed=4)
    assert len(a) == 40
    assert a[0][0].shape == (3, 24, 24)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.targets).tolist() == [10, 10, 10, 10]
    assert a.num_classes == len(a.classes) == 4
    assert len(synthetic_dataset(n=32, num_classes=12, image_size=8).classes) == 12
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_dataset(num_classes=1)


def test_synthetic_data_is_learnable() -> None:
    model = tiny_conv(4)
    train = synthetic_dataset(n=256, num_classes=4, image_size=16, seed=0)
    report = finetune(model, train, epochs=2, batch_size=16, lr=1e-2, seed=0)
    held_out = synthetic_dataset(n=128, num_classes=4, image_size=16, seed=1)
    model.eval()
    with torch.no_grad():
        acc = (model(held_out.images).argmax(1) == held_out.targets).float().mean().item()
    assert report.epoch_acc[-1] > report.epoch_acc[0]
    assert acc > 0.6, f"held-out accuracy {acc:.2f} (chance 0.25)"


# --------------------------------------------------------------------------- verification


def test_frozen_bitwise_unchanged_trainable_changed(seq_bn: nn.Sequential) -> None:
    freeze(seq_bn, "0", "1")
    before = snapshot(seq_bn)
    report = finetune(seq_bn, vectors(), epochs=2, batch_size=16, lr=0.05)
    after = snapshot(seq_bn)
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["3.weight"], after["3.weight"])
    assert report.ok
    rows = {r.name: r for r in report.verification}
    assert rows["0.weight"].was_frozen and rows["0.weight"].status == "ok"
    assert not rows["0.weight"].changed and rows["0.weight"].max_abs_change == 0.0
    assert rows["3.weight"].changed and rows["3.weight"].status == "ok"
    assert {r.name for r in report.verification if r.kind == "buffer"} == {
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert "all 4 frozen parameter tensors bitwise unchanged; 2 trainable changed" in (
        report.summary()
    )
    assert "frozen BatchNorm statistics unchanged (policy 'eval')" in report.summary()
    assert report.head_replaced is None
    assert report.steps == 8 and len(report.step_loss) == 8 and len(report.epoch_loss) == 2


def test_stale_gradient_on_frozen_parameter_does_not_move_it(seq_bn: nn.Sequential) -> None:
    seq_bn[0].weight.grad = torch.ones_like(seq_bn[0].weight)
    seq_bn[0].weight.requires_grad_(False)  # frozen by hand: the stale .grad is still there
    before = seq_bn[0].weight.detach().clone()
    report = finetune(seq_bn, vectors(), steps=3, batch_size=16, optimizer="sgd", lr=0.1)
    assert torch.equal(seq_bn[0].weight, before)
    assert seq_bn[0].weight.grad is None
    assert report.ok


@pytest.mark.parametrize("policy", ["eval", "frozen", "train"])
def test_batchnorm_policies(seq_bn: nn.Sequential, policy: str) -> None:
    freeze(seq_bn, "0", "1", bn=policy)
    stats = seq_bn[1].running_mean.detach().clone()
    report = finetune(seq_bn, vectors(), steps=4, batch_size=16)
    moved = not torch.equal(stats, seq_bn.get_submodule("1").running_mean)
    assert report.bn_policy == policy
    assert report.ok  # "train" updates are expected, not a failure
    buffers = [r for r in report.verification if r.kind == "buffer"]
    if policy == "train":
        assert moved
        assert {r.status for r in buffers if r.changed} == {"updated"}
        assert "frozen BatchNorm statistics CHANGED (policy 'train'" in report.summary()
    else:
        assert not moved
        assert all(r.status == "ok" and not r.changed for r in buffers)
        assert f"frozen BatchNorm statistics unchanged (policy '{policy}')" in report.summary()


def test_bn_argument_reapplies_policy(seq_bn: nn.Sequential) -> None:
    freeze(seq_bn, "0", "1", bn="eval")
    report = finetune(seq_bn, vectors(), steps=2, batch_size=16, bn="train")
    assert report.bn_policy == "train"
    assert bn_state(seq_bn[1]) == "train"
    assert any(r.status == "updated" for r in report.verification)


def test_moved_frozen_weight_is_reported(seq_bn: nn.Sequential) -> None:
    freeze(seq_bn, "0")
    frozen_weight = seq_bn[0].weight

    def tamper(event: StepEvent) -> None:
        with torch.no_grad():
            frozen_weight.add_(1.0)  # something outside the optimizer moves a frozen tensor

    report = finetune(seq_bn, vectors(), steps=1, batch_size=16, callback=tamper)
    assert not report.ok
    assert [r.name for r in report.moved] == ["0.weight"]
    assert report.moved[0].max_abs_change == pytest.approx(1.0)
    assert "1 of 2 frozen parameter tensors MOVED: 0.weight" in report.summary()


def test_trainable_without_gradient_path_is_flagged() -> None:
    torch.manual_seed(0)
    report = finetune(Skip(), vectors(), steps=2, batch_size=16)
    assert report.ok and not report.no_gradient_path

    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(32, 2)
            self.spare = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    report = finetune(Dead(), vectors(), steps=2, batch_size=16)
    assert {r.name for r in report.no_gradient_path} == {"spare.weight", "spare.bias"}
    assert report.ok  # not a safety failure, but shown
    assert "2 trainable unchanged (no gradient path)" in report.summary()


# --------------------------------------------------------------------------- resnet18


def test_resnet18_partial_freeze_and_head_replacement(resnet18: nn.Module) -> None:
    freeze(resnet18, "conv1", "bn1", "layer1", "layer2", "layer3")
    before = snapshot(resnet18)
    data = synthetic_dataset(n=8, num_classes=4, image_size=32)
    report = finetune(resnet18, data, steps=2, batch_size=4)
    assert report.head_replaced == "fc: Linear(512->1000) replaced by Linear(512->4)"
    assert resnet18.fc.out_features == 4 and resnet18.fc.weight.requires_grad
    assert report.ok
    assert report.frozen_prefix == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    for name, value in snapshot(resnet18).items():
        if name.startswith(("conv1", "bn1", "layer1", "layer2", "layer3")):
            assert torch.equal(before[name], value), name
    assert not torch.equal(before["layer4.0.conv1.weight"], resnet18.layer4[0].conv1.weight)
    # BN inside the trainable layer4 keeps tracking statistics.
    assert not torch.equal(before["layer4.0.bn1.running_mean"], resnet18.layer4[0].bn1.running_mean)
    frozen_params = sum(1 for r in report.verification if r.kind == "parameter" and r.was_frozen)
    assert f"all {frozen_params} frozen parameter tensors bitwise unchanged" in report.summary()


def test_resnet18_chain_split_matches_full_forward(resnet18: nn.Module) -> None:
    freeze(resnet18)
    unfreeze(resnet18, "fc")
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    chain = _find_chain(resnet18, x)
    assert chain is not None and chain.flatten_before_linear
    resnet18.train()
    k = chain.frozen_prefix(resnet18)
    assert chain.names[:k][-1] == "avgpool"
    with torch.no_grad():
        feats = chain.run(resnet18, x, 0, k)
    assert not feats.requires_grad  # no graph (and no saved activations) for the prefix
    split_loss = F.cross_entropy(chain.run(resnet18, feats, k, len(chain.names)), y)
    full_loss = F.cross_entropy(resnet18(x), y)
    torch.testing.assert_close(split_loss, full_loss)
    assert resnet18.training  # the check restores modes


def test_split_loss_equals_full_forward_on_fixed_batch() -> None:
    model = tiny_conv()
    freeze(model, "conv1", "bn1")
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 4
    chain = _find_chain(model, x)
    assert chain is not None
    model.train()
    k = chain.frozen_prefix(model)
    assert chain.names[:k] == ["conv1", "bn1", "relu"]
    with torch.no_grad():
        feats = chain.run(model, x, 0, k)
    split = F.cross_entropy(chain.run(model, feats, k, len(chain.names)), y)
    # Same batch statistics in bn2 either way (train mode), so the losses agree.
    full = F.cross_entropy(model(x), y)
    torch.testing.assert_close(split, full)


def test_non_chain_model_falls_back_to_full_forward() -> None:
    torch.manual_seed(0)
    model = Skip()
    freeze(model, "stem")
    assert _find_chain(model, torch.randn(4, 32)) is None
    report = finetune(model, vectors(), epochs=2, batch_size=16)
    assert report.frozen_prefix == [] and report.cached_epochs == []
    assert report.ok


# --------------------------------------------------------------------------- caching


def test_cached_feature_epochs() -> None:
    model = tiny_conv()
    freeze(model)
    unfreeze(model, "fc")
    before = snapshot(model)
    report = finetune(model, small_images(64), epochs=3, batch_size=16, lr=1e-2)
    assert report.frozen_prefix == ["conv1", "bn1", "relu", "conv2", "bn2", "relu2", "pool"]
    assert report.cached_epochs == [2, 3]
    assert report.steps == 12 and len(report.epoch_loss) == 3
    assert report.ok
    assert report.epoch_loss[-1] < report.epoch_loss[0]
    assert not torch.equal(before["fc.weight"], model.fc.weight)


def test_cached_epoch_gives_same_loss_as_recomputed_features() -> None:
    data = small_images(32)
    losses = []
    for cache in (True, False):
        model = tiny_conv()
        freeze(model)
        unfreeze(model, "fc")
        # Full-batch: the batch is the whole set, so shuffling order cannot matter much.
        report = finetune(model, data, epochs=2, batch_size=32, cache_features=cache, lr=0.1)
        assert report.cached_epochs == ([2] if cache else [])
        losses.append(report.step_loss)
    torch.testing.assert_close(
        torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-4, atol=1e-5
    )


def test_no_cache_with_augmentation_or_training_batchnorm() -> None:
    model = tiny_conv()
    freeze(model)
    unfreeze(model, "fc")
    report = finetune(model, small_images(32), epochs=2, batch_size=16, augment=True)
    assert report.cached_epochs == []
    with pytest.raises(ValueError, match="augment"):
        finetune(model, small_images(32), epochs=2, augment=True, cache_features=True)
    model = tiny_conv()
    freeze(model, bn="train")
    unfreeze(model, "fc")
    report = finetune(model, small_images(32), epochs=2, batch_size=16)
    assert report.cached_epochs == []  # BN statistics in the prefix change every batch
    assert report.frozen_prefix  # still run under no_grad


# --------------------------------------------------------------------------- gradual unfreezing


def test_gradual_unfreezing_adds_groups_per_epoch() -> None:
    model = tiny_conv()
    freeze(model)
    unfreeze(model, "fc")
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen: list[tuple[int, int, bool, bool]] = []

    def watch(event: StepEvent) -> None:
        seen.append(
            (
                event.epoch,
                event.param_groups,
                torch.equal(initial["bn2.weight"], model.bn2.weight),
                torch.equal(initial["conv2.weight"], model.conv2.weight),
            )
        )

    report = finetune(
        model,
        small_images(32),
        epochs=3,
        batch_size=16,
        unfreeze_schedule="gradual",
        callback=watch,
    )
    assert [(e.epoch, e.group) for e in report.unfreeze_events] == [(2, "bn2"), (3, "conv2")]
    assert report.unfreeze_events[0].lr == pytest.approx(1e-3 / 2.6)
    assert report.unfreeze_events[1].lr == pytest.approx(1e-3 / 2.6**2)
    by_epoch = {e: [s for s in seen if s[0] == e] for e in (1, 2, 3)}
    assert all(groups == 1 and bn2 and conv2 for _, groups, bn2, conv2 in by_epoch[1])
    assert all(groups == 2 and not bn2 and conv2 for _, groups, bn2, conv2 in by_epoch[2])
    assert all(groups == 3 and not conv2 for _, groups, _, conv2 in by_epoch[3])
    assert torch.equal(initial["conv1.weight"], model.conv1.weight)
    assert report.ok
    rows = {r.name: r for r in report.verification}
    assert (
        rows["conv2.weight"].note == "unfrozen at epoch 3" and not rows["conv2.weight"].was_frozen
    )
    assert rows["conv1.weight"].was_frozen and rows["conv1.weight"].status == "ok"
    assert "epoch 2: unfroze bn2" in report.summary()
    assert model.training and model.bn2.training  # released BN follows the model again
    assert not model.bn1.training  # still frozen under the "eval" policy


def test_explicit_schedule_and_unknown_group() -> None:
    model = tiny_conv()
    freeze(model)
    unfreeze(model, "fc")
    report = finetune(
        model, small_images(16), epochs=2, batch_size=16, unfreeze_schedule=[["conv2", "bn2"]]
    )
    assert [(e.epoch, e.group) for e in report.unfreeze_events] == [(2, "conv2"), (2, "bn2")]
    with pytest.raises(ValueError, match="not in the model"):
        finetune(model, small_images(16), epochs=2, unfreeze_schedule=["layer9"])


def test_gradual_schedule_skips_a_replaced_head() -> None:
    model = tiny_conv(num_classes=4)
    freeze(model)  # fc frozen too, but it is replaced by a trainable 3-class head
    data = small_images(24, classes=3)
    report = finetune(model, data, epochs=2, batch_size=12, unfreeze_schedule="gradual")
    assert report.head_replaced == "fc: Linear(16->4) replaced by Linear(16->3)"
    assert [(e.epoch, e.group) for e in report.unfreeze_events] == [(2, "bn2")]
    assert report.ok


# --------------------------------------------------------------------------- data inputs


def test_dataset_dataloader_and_bad_data(seq_bn: nn.Sequential) -> None:
    report = finetune(seq_bn, vectors(48), batch_size=16)
    assert report.steps == 3 and report.num_classes == 2 and report.head_replaced is None
    loader = DataLoader(vectors(40), batch_size=20)
    report = finetune(seq_bn, loader, epochs=2)
    assert report.steps == 4 and report.samples == 80
    with pytest.raises(TypeError, match="Dataset"):
        finetune(seq_bn, 42)
    with pytest.raises(ValueError, match="not a directory"):
        finetune(seq_bn, "/no/such/folder")
    with pytest.raises(ValueError, match="optimizer"):
        finetune(seq_bn, vectors(), optimizer="lbfgs")


def test_image_folder(tmp_path: object) -> None:
    from pathlib import Path

    from PIL import Image

    root = Path(str(tmp_path))
    for label, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (root / label).mkdir()
        for i in range(4):
            Image.new("RGB", (20 + i, 24), colour).save(root / label / f"{i}.png")
    model = tiny_conv(num_classes=4)
    report = finetune(model, str(root), epochs=2, batch_size=4, image_size=16, lr=1e-2)
    assert report.num_classes == 2
    assert report.head_replaced == "fc: Linear(16->4) replaced by Linear(16->2)"
    assert report.steps == 4 and report.ok


def test_classifier_head_replacement() -> None:
    torch.manual_seed(0)

    class WithClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU())
            self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))

    model = WithClassifier()
    freeze(model)
    report = finetune(model, small_images(16, classes=3, size=8), steps=2, batch_size=8)
    assert report.head_replaced == "classifier.1: Linear(16->10) replaced by Linear(16->3)"
    assert report.ok


# --------------------------------------------------------------------------- errors, stopping


def test_nothing_trainable_raises_before_any_work(seq_bn: nn.Sequential) -> None:
    freeze(seq_bn)
    calls: list[StepEvent] = []
    with pytest.raises(ValueError, match=r"nothing to train: all 6 parameters are frozen"):
        finetune(seq_bn, vectors(), callback=calls.append)
    assert calls == []


def test_nan_loss_names_the_step_and_attaches_report() -> None:
    torch.manual_seed(0)
    model = NaNAfter(at=3)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 3 \(epoch 1\)") as info:
        finetune(model, vectors(), batch_size=16)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    report = info.value.report
    assert isinstance(report, FineTuneReport)
    assert report.steps == 2 and report.stopped_early and report.verification
    assert "try a lower lr" in str(info.value)


def test_huge_lr_diverges_without_moving_frozen_weights(seq_bn: nn.Sequential) -> None:
    freeze(seq_bn, "0", "1")
    before = snapshot(seq_bn)
    with pytest.raises(NonFiniteLossError) as info:
        # Only the head trains, so logits must overflow float32 before the loss is non-finite.
        finetune(seq_bn, vectors(), epochs=5, batch_size=16, lr=1e38, optimizer="sgd")
    assert info.value.report.ok
    assert torch.equal(before["0.weight"], seq_bn[0].weight)
    assert seq_bn.training  # modes restored even on error


def test_stop_event_and_callback_false(seq_bn: nn.Sequential) -> None:
    stop = threading.Event()

    def set_at_two(event: StepEvent) -> None:
        assert event.total_steps == 8 and event.eta_seconds >= 0
        if event.step == 2:
            stop.set()

    report = finetune(seq_bn, vectors(), epochs=2, batch_size=16, callback=set_at_two, stop=stop)
    assert report.steps == 2 and report.stopped_early and report.stop_reason == "stop requested"
    report = finetune(seq_bn, vectors(), epochs=2, batch_size=16, callback=lambda e: e.step < 3)
    assert report.steps == 3 and report.stop_reason == "callback returned False"


@pytest.mark.parametrize("mode", [True, False])
def test_model_mode_restored(seq_bn: nn.Sequential, mode: bool) -> None:
    freeze(seq_bn, "0", "1")
    seq_bn.train(mode)
    finetune(seq_bn, vectors(), steps=2, batch_size=16)
    assert seq_bn.training is mode
    assert seq_bn[3].training is mode
    assert seq_bn[1].training is False  # the frozen BN stays in eval either way
    seq_bn.train()
    assert seq_bn[1].training is False

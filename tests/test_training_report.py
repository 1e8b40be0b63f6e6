"""FineTuneReport.summary(): golden text for reports built by hand with fixed numbers."""

from __future__ import annotations

from freeze_widgets.training import FineTuneReport, UnfreezeEvent, VerificationRow


def _param(name: str, *, frozen: bool, changed: bool, status: str) -> VerificationRow:
    return VerificationRow(name, "parameter", frozen, changed, 0.5 if changed else 0.0, status)


def _buffer(name: str, *, changed: bool, status: str, policy: str) -> VerificationRow:
    delta = 0.25 if changed else 0.0
    return VerificationRow(name, "buffer", True, changed, delta, status, policy)


def test_summary_of_a_passing_run_with_head_unfreezing_and_early_stop() -> None:
    report = FineTuneReport(
        step_loss=[1.5, 0.61234],
        epoch_acc=[0.5, 0.8],
        steps=12,
        total_steps=20,
        epochs=3,
        samples=384,
        total_seconds=2.34,
        samples_per_second=163.7,
        stopped_early=True,
        stop_reason="callback returned False",
        head_replaced="fc: Linear(16->10) replaced by Linear(16->4)",
        unfreeze_events=[
            UnfreezeEvent(2, "layer4", 0.001 / 2.6, 3),
            UnfreezeEvent(3, "layer3", 0.001 / 2.6**2, 3),
        ],
        verification=[
            _param("conv.weight", frozen=True, changed=False, status="ok"),
            _param("conv.bias", frozen=True, changed=False, status="ok"),
            _param("fc.weight", frozen=False, changed=True, status="ok"),
            _param("fc.bias", frozen=False, changed=False, status="no gradient path"),
            _buffer("bn.running_mean", changed=False, status="ok", policy="eval"),
        ],
    )
    expected = "\n".join(
        [
            "trained 12 steps (3 epochs) in 2.3 s, 164 samples/s; final loss 0.6123, "
            "accuracy 80.0% (mean over the last epoch's batches)",
            "stopped early (callback returned False) after 12 of 20 steps: the model keeps "
            "what was trained",
            "head fc: Linear(16->10) replaced by Linear(16->4)",
            "epoch 2: unfroze layer4 at lr 0.000385",
            "epoch 3: unfroze layer3 at lr 0.000148",
            "all 2 frozen parameter tensors bitwise unchanged; 1 trainable changed, "
            "1 trainable unchanged (no gradient path)",
            "frozen BatchNorm statistics unchanged (policy 'eval')",
            "OK: frozen weights did not move",
        ]
    )
    assert report.summary() == expected
    assert str(report) == expected
    assert report.ok


def test_summary_of_a_failing_run_names_what_moved() -> None:
    moved = [
        _param(f"layer.{i}.weight", frozen=True, changed=True, status="MOVED") for i in range(6)
    ]
    report = FineTuneReport(
        steps=0,
        epochs=1,
        verification=[
            *moved,
            _param("fc.weight", frozen=False, changed=True, status="ok"),
            _buffer("bn.running_var", changed=True, status="MOVED", policy="frozen"),
            _buffer("bn.running_mean", changed=False, status="ok", policy="eval"),
        ],
    )
    expected = "\n".join(
        [
            "trained 0 steps (1 epoch) in 0.0 s, 0 samples/s",
            "6 of 6 frozen parameter tensors MOVED: layer.0.weight, layer.1.weight, "
            "layer.2.weight, layer.3.weight, layer.4.weight ...; 1 trainable changed",
            "frozen BatchNorm statistics MOVED in 1 buffers (policy 'eval', 'frozen'): "
            "bn.running_var",
            "FAILED: see MOVED rows",
        ]
    )
    assert report.summary() == expected
    assert not report.ok


def test_summary_without_frozen_parameters_and_with_train_policy_statistics() -> None:
    report = FineTuneReport(
        step_loss=[0.25],
        steps=1,
        epochs=1,
        total_seconds=0.5,
        samples_per_second=64.0,
        verification=[
            _param("fc.weight", frozen=False, changed=True, status="ok"),
            _buffer("bn.running_mean", changed=True, status="updated", policy="train"),
        ],
    )
    expected = "\n".join(
        [
            "trained 1 steps (1 epoch) in 0.5 s, 64 samples/s; final loss 0.25",
            "no frozen parameters; 1 trainable changed",
            "frozen BatchNorm statistics CHANGED (policy 'train': running statistics keep "
            "updating)",
            "OK: frozen weights did not move",
        ]
    )
    assert report.summary() == expected


def test_summary_of_an_empty_verification() -> None:
    expected = "\n".join(
        [
            "trained 0 steps (0 epochs) in 0.0 s, 0 samples/s",
            "no frozen parameters; 0 trainable changed",
            "no frozen BatchNorm layers",
            "OK: frozen weights did not move",
        ]
    )
    assert FineTuneReport().summary() == expected


def test_summary_lists_optimizer_audit_findings() -> None:
    from freeze_widgets import Finding

    report = FineTuneReport(steps=1, epochs=1, total_seconds=1.0)
    report.optimizer_findings = [
        Finding("trainable_not_in_optimizer", "fc.weight", "not in any group.", "add it.")
    ]
    lines = report.summary().splitlines()
    assert lines[-2] == (
        "optimizer audit: trainable_not_in_optimizer [fc.weight]: not in any group. Fix: add it."
    )

"""finetune_distributed on 2 gloo processes: reports checked against each rank's saved state.

Every multi-process test is bounded (pytest timeout and the run's own timeout_s) and checks
that no child process survives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
from torch import nn

from freeze_widgets import freeze
from freeze_widgets.distributed import DistributedRunError, finetune_distributed
from tests.distributed_helpers import Misbehaving, tiny_net

# Worker processes under torchrun: seconds each, so in the slow tier.
pytestmark = [pytest.mark.timeout(360), pytest.mark.slow]

RUN = {"nproc": 2, "image_size": 16, "synthetic_n": 64, "batch_size": 16, "timeout_s": 300}


@pytest.fixture
def no_child_left() -> Iterator[None]:
    """Fails the test if a process started during it is still alive afterwards."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    alive = [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()]
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def _states(workdir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        torch.load(workdir / "rank0.pt", weights_only=True),
        torch.load(workdir / "rank1.pt", weights_only=True),
    )


def _check_run(strategy: str, optimizer: str, tmp_path: Path) -> None:
    model = tiny_net()
    freeze(model, "0", "1", "3", "4")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    report = finetune_distributed(
        model,
        strategy=strategy,
        optimizer=optimizer,
        epochs=2,
        # "3" joins at epoch 2; "4" is due at epoch 5, never reached: it is trainable for
        # DDP's sake with gradients every step, and must still not move (momentum, decay).
        unfreeze_schedule={2: ["3"], 5: ["4"]},
        workdir=tmp_path,
        keep_rank_states=True,
        **RUN,
    )
    r0, r1 = _states(tmp_path)
    frozen = [k for k in start if k.split(".")[0] in ("0", "1", "4")]
    trainable = ["3.weight", "8.weight", "8.bias"]
    for name in frozen:  # includes BatchNorm running statistics
        assert torch.equal(r0[name], start[name]), name
        assert torch.equal(r1[name], start[name]), name
    for name in trainable:
        assert torch.equal(r0[name], r1[name]), name
        assert not torch.equal(r0[name], start[name]), name
    # The caller's model holds the trained weights (rank 0's, equal to rank 1's).
    after = model.state_dict()
    for name in frozen + trainable:
        assert torch.equal(after[name], r0[name]), name
    assert model[3].weight.requires_grad and not model[4].weight.requires_grad
    # The report says what the files show.
    assert report.ok and report.ranks_agree, report.summary()
    assert [v.rank for v in report.ranks] == [0, 1]
    assert all(v.frozen_unchanged for v in report.ranks)
    assert [(e.epoch, e.group) for e in report.unfreeze_events] == [(2, "3")]
    rows = {r.name: r for r in report.verification}
    assert rows["4.weight"].was_frozen and rows["4.weight"].status == "ok"
    assert rows["4.running_mean"].was_frozen and not rows["4.running_mean"].changed
    assert not rows["3.weight"].was_frozen and rows["3.weight"].changed
    assert len(report.step_loss) == report.steps == report.total_steps == 4
    assert report.strategy == strategy and report.nproc == 2


def test_ddp_run_verified_on_every_rank(tmp_path: Path, no_child_left: None) -> None:
    _check_run("ddp", "sgd", tmp_path)


def test_fsdp2_run_verified_on_every_rank(tmp_path: Path, no_child_left: None) -> None:
    _check_run("fsdp", "adamw", tmp_path)


def test_naive_freeze_after_a_momentum_step_moves_the_weight(tmp_path: Path) -> None:
    """The trap the runner avoids: frozen after a step, SGD momentum still moves it under DDP."""
    store = dist.FileStore(str(tmp_path / "store"), 1)  # type: ignore[attr-defined]
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        for step in range(2):
            if step == 1:
                model[0].weight.requires_grad_(False)  # naive: grad and momentum kept
                before = model[0].weight.detach().clone()
            opt.zero_grad(set_to_none=False)
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        assert not torch.equal(model[0].weight, before)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("how", "cause"), [("raise", "ValueError: corrupt sample"), ("kill", "SIGKILL")]
)
def test_worker_failure_is_one_readable_error(
    how: str, cause: str, tmp_path: Path, no_child_left: None
) -> None:
    model = tiny_net()
    freeze(model, "0", "1")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DistributedRunError) as info:
        finetune_distributed(model, Misbehaving(how), workdir=tmp_path, **RUN)
    assert info.value.rank == 1
    assert cause in str(info.value) and "rank 1" in str(info.value)
    after = model.state_dict()
    assert all(torch.equal(start[k], after[k]) for k in start)  # untouched on failure


def test_timeout_kills_every_worker(tmp_path: Path, no_child_left: None) -> None:
    model = tiny_net()
    with pytest.raises(DistributedRunError, match="timeout_s=40") as info:
        finetune_distributed(
            model, Misbehaving("hang"), workdir=tmp_path, **{**RUN, "timeout_s": 40}
        )
    assert info.value.rank is None and info.value.cause == "timeout"


def test_bad_arguments_fail_before_starting_anything() -> None:
    model = tiny_net()
    with pytest.raises(TypeError, match="model"):
        finetune_distributed(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy"):
        finetune_distributed(model, strategy="fsdp1")
    with pytest.raises(TypeError, match="nproc"):
        finetune_distributed(model, nproc=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in the model"):
        finetune_distributed(model, unfreeze_schedule={2: ["layer9"]})
    freeze(model)
    model[8] = nn.Linear(8, 4).requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        finetune_distributed(model)


class _UnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_net()
        self.spare = nn.Linear(4, 4)  # trainable, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_ddp_refuses_trainable_parameters_without_gradient_before_starting() -> None:
    with pytest.raises(ValueError, match=r"no gradient[\s\S]*spare"):
        finetune_distributed(_UnusedHead(), num_classes=4, **RUN)

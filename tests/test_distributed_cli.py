"""``python -m freeze_widgets finetune`` under torchrun (2 processes) and as a single process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freeze_widgets import FreezeSpec, freeze, load_model, unfreeze
from freeze_widgets.cli import main

# Worker processes under torchrun: seconds each, so in the slow tier.
pytestmark = [pytest.mark.timeout(360), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _spec_file(tmp_path: Path) -> Path:
    model = load_model("resnet18", pretrained=False)
    freeze(model)
    unfreeze(model, "fc")
    path = tmp_path / "spec.json"
    path.write_text(FreezeSpec.from_model(model).to_json(), encoding="utf-8")
    return path


def _args(tmp_path: Path, report: Path, state: Path) -> list[str]:
    return [
        "finetune",
        "--model", "resnet18",
        "--no-pretrained",
        "--spec", str(_spec_file(tmp_path)),
        "--steps", "2",
        "--batch-size", "4",
        "--image-size", "32",
        "--report", str(report),
        "--save-state", str(state),
    ]  # fmt: skip


def _expected_start() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # what every rank does before load_model (same random weights)
    return load_model("resnet18", pretrained=False).state_dict()


def _check(report_path: Path, state_path: Path, nproc: int) -> None:
    data = json.loads(report_path.read_text())
    assert data["ok"] is True, data["summary"]
    assert [v["rank"] for v in data["ranks"]] == list(range(nproc))
    assert all(v["frozen_unchanged"] for v in data["ranks"])
    assert len(data["step_loss"]) == 2
    state = torch.load(state_path, weights_only=True)
    start = _expected_start()
    frozen = [k for k in start if not k.startswith("fc.")]
    assert all(torch.equal(state[k], start[k]) for k in frozen)  # incl. BN statistics
    assert state["fc.weight"].shape == (4, 512)  # synthetic data: 4 classes, new head


def test_cli_under_torchrun_two_processes(tmp_path: Path) -> None:
    report, state = tmp_path / "out.json", tmp_path / "state.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "freeze_widgets", *_args(tmp_path, report, state),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FREEZE_WIDGETS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    _check(report, state, nproc=2)


def test_cli_without_torchrun_runs_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    report, state = tmp_path / "out.json", tmp_path / "state.pt"
    assert main(_args(tmp_path, report, state)) == 0
    _check(report, state, nproc=1)

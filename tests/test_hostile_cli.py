"""The CLI refuses bad arguments and unwritable outputs before training, and leaves no temp folder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from freeze_widgets import FreezeSpec, freeze, load_model, unfreeze
from freeze_widgets.cli import main
from freeze_widgets.distributed import worker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    model = load_model("resnet18", pretrained=False)
    freeze(model)
    unfreeze(model, "fc")
    path = tmp_path / "spec.json"
    path.write_text(FreezeSpec.from_model(model).to_json(), encoding="utf-8")
    return path


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Training must not start; temporary folders go to a folder the test watches."""

    def trains(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started for a bad argument")

    monkeypatch.setattr(worker, "run_job", trains)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    return temp


def _argv(spec: Path, report: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--model", "resnet18", "--no-pretrained", "--spec", str(spec),
        "--report", str(report), "--image-size", "32", "--batch-size", "4", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "nan"], "--lr must be a positive finite number"),
        (["--lr", "-1"], "--lr must be a positive finite number"),
        (["--image-size", "0"], "--image-size must be at least 1"),
        (["--num-classes", "0"], "--num-classes must be at least 1"),
        (["--timeout", "0"], "--timeout must be a positive finite number"),
    ],
)
def test_bad_numbers_exit_1_before_training(
    extra: list[str], flag: str, spec_file: Path, tmp_path: Path, no_training: Path
) -> None:
    report = tmp_path / "report.json"
    with pytest.raises(SystemExit) as info:
        main(_argv(spec_file, report, *extra))
    assert info.value.code != 0 and flag in str(info.value.code)
    assert not report.exists() and list(no_training.iterdir()) == []


@pytest.mark.parametrize("which", ["--report", "--save-state"])
@pytest.mark.parametrize("kind", ["under a file", "a folder"])
def test_unwritable_outputs_are_found_before_training(
    which: str, kind: str, spec_file: Path, tmp_path: Path, no_training: Path
) -> None:
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("x")
    bad = blocker / "out.json" if kind == "under a file" else tmp_path
    report = bad if which == "--report" else tmp_path / "report.json"
    extra = ["--save-state", str(bad)] if which == "--save-state" else []
    with pytest.raises(SystemExit) as info:
        main(_argv(spec_file, report, *extra))
    assert which in str(info.value.code) and str(bad) in str(info.value.code)
    assert list(no_training.iterdir()) == []


def test_a_missing_spec_or_data_folder_is_one_line(
    spec_file: Path, tmp_path: Path, no_training: Path
) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SystemExit, match=r"--spec .*nope\.json"):
        main(_argv(missing, tmp_path / "r.json"))
    with pytest.raises(SystemExit, match=r"--data .* is not a folder"):
        main(_argv(spec_file, tmp_path / "r.json", "--data", str(tmp_path / "nodata")))


@pytest.mark.slow
def test_a_single_process_run_leaves_no_temporary_folder(
    spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    report = tmp_path / "out" / "report.json"
    state = tmp_path / "new" / "state.pt"  # a folder that does not exist yet
    assert main(_argv(spec_file, report, "--steps", "1", "--save-state", str(state))) == 0
    assert state.is_file()
    assert json.loads(report.read_text())["total_steps"] == 1
    assert list(temp.iterdir()) == []  # no fw-cli-*, no fw-store-*

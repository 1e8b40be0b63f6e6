"""The offline digits dataset against scikit-learn's own copy, and the dataset name registry."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits

from freeze_widgets.data import digits as datasets
from freeze_widgets.data.digits import digits_dataset
from freeze_widgets.data.images import LabelledImages
from freeze_widgets.data.named import DATASET_NAMES, finetune_dataset, named_dataset


@pytest.fixture(scope="module")
def sk() -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()
    return torch.as_tensor(bunch.images, dtype=torch.float32), torch.as_tensor(bunch.target)


def test_all_split_is_every_digit_scaled_to_unit_range(
    sk: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = sk
    ds = digits_dataset(split="all")
    assert len(ds) == len(labels) == 1797
    assert ds.images.shape == (1797, 1, 8, 8)
    order = ds.indices
    assert torch.equal(order.sort().values, torch.arange(1797))
    # Each image is scikit-learn's row divided by 16, with that row's label.
    assert torch.equal(ds.images[:, 0], images[order] / 16.0)
    assert torch.equal(ds.targets, labels[order])
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert ds.classes == [str(d) for d in range(10)]


def test_train_and_test_are_disjoint_and_cover_everything(
    sk: tuple[torch.Tensor, torch.Tensor],
) -> None:
    _, labels = sk
    train, test = digits_dataset(split="train"), digits_dataset(split="test")
    a, b = set(train.indices.tolist()), set(test.indices.tolist())
    assert not a & b
    assert a | b == set(range(1797))
    # About 30 % of every digit is held out.
    for digit in range(10):
        n = int((labels == digit).sum())
        n_test = int((test.targets == digit).sum())
        assert n_test == round(0.3 * n)


def test_split_does_not_depend_on_seed() -> None:
    test0 = digits_dataset(split="test", seed=0)
    test7 = digits_dataset(split="test", seed=7)
    assert set(test0.indices.tolist()) == set(test7.indices.tolist())
    few = digits_dataset(split="train", per_class=5, seed=7)
    assert not set(few.indices.tolist()) & set(test0.indices.tolist())


def test_classes_are_relabelled_in_the_given_order(sk: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, labels = sk
    ds = digits_dataset(classes=[7, 2], split="all")
    assert ds.classes == ["7", "2"]
    assert len(ds) == int((labels == 7).sum() + (labels == 2).sum())
    original = labels[ds.indices]
    assert torch.equal(ds.targets == 0, original == 7)
    assert torch.equal(ds.targets == 1, original == 2)


def test_classes_accept_numpy_integers() -> None:
    import numpy as np

    ds = digits_dataset(classes=np.array([4, 1]), per_class=2)
    assert ds.classes == ["4", "1"] and len(ds) == 4


def test_per_class_few_shot_and_seed_determinism() -> None:
    a = digits_dataset(classes=[5, 6, 7], per_class=4, seed=3)
    b = digits_dataset(classes=[5, 6, 7], per_class=4, seed=3)
    c = digits_dataset(classes=[5, 6, 7], per_class=4, seed=4)
    assert len(a) == 12
    assert torch.bincount(a.targets).tolist() == [4, 4, 4]
    assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)


def test_resize_and_three_channels(sk: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = sk
    ds = digits_dataset(split="all", image_size=32, channels=3)
    assert ds.images.shape == (1797, 3, 32, 32)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # a grey copy in each channel
    # The resize is bilinear interpolation of the original pixels, independently computed.
    first = (images[ds.indices[:3]] / 16.0).unsqueeze(1)
    expected = torch.nn.functional.interpolate(first, size=(32, 32), mode="bilinear")
    assert torch.allclose(ds.images[:3, :1], expected)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int)


def test_finetune_reads_classes_and_labels_without_iterating() -> None:
    from freeze_widgets.data.loaders import infer_num_classes

    ds = digits_dataset(classes=[1, 4, 9], per_class=2)
    assert isinstance(ds, LabelledImages)
    assert infer_num_classes(ds) == 3
    assert "classes=['1', '4', '9']" in repr(ds)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "valid"}, ValueError, "split must be one of"),
        ({"channels": 2}, ValueError, "channels must be 1"),
        ({"per_class": 0}, ValueError, "per_class must be at least 1"),
        ({"per_class": 2.5}, TypeError, "per_class must be an int"),
        ({"classes": [1, 1]}, ValueError, "distinct"),
        ({"classes": [10]}, ValueError, "digits 0-9"),
        ({"classes": []}, ValueError, "at least one"),
        ({"classes": "123"}, TypeError, "classes must be a sequence"),
        ({"classes": [1.5]}, TypeError, "classes must be integer digits"),
        ({"image_size": 0}, ValueError, "image_size must be positive"),
        ({"image_size": "32"}, TypeError, "image_size must be an int"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        digits_dataset(**kwargs)


def test_missing_scikit_learn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sklearn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    datasets._load_digits.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    try:
        with pytest.raises(ImportError, match=r"freeze_widgets\[teach\]"):
            digits_dataset()
    finally:
        monkeypatch.undo()
        datasets._load_digits.cache_clear()


def test_named_dataset_registry() -> None:
    assert set(DATASET_NAMES) == {"digits", "synthetic"}
    digits = named_dataset("digits", classes=[0, 1], per_class=3)
    assert isinstance(digits, LabelledImages) and len(digits) == 6
    synthetic = named_dataset("synthetic", n=8, num_classes=2, image_size=16)
    assert len(synthetic) == 8  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="known names: 'digits', 'synthetic'"):
        named_dataset("mnist")
    with pytest.raises(TypeError, match="name must be"):
        named_dataset(None)  # type: ignore[arg-type]


def test_finetune_dataset_is_the_train_split_in_three_channels() -> None:
    ds = finetune_dataset("digits", image_size=16, seed=1)
    assert isinstance(ds, LabelledImages)
    assert ds.images.shape[1:] == (3, 16, 16)
    assert set(ds.indices.tolist()) == set(digits_dataset(split="train").indices.tolist())
    synthetic = finetune_dataset("synthetic", image_size=16)
    assert synthetic[0][0].shape == (3, 16, 16)


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )


def test_finetune_trains_on_the_digits_dataset() -> None:
    from freeze_widgets import finetune

    model = _tiny_classifier()
    conv_before = model[0].weight.detach().clone()
    model[0].requires_grad_(False)
    data = finetune_dataset("digits", image_size=8)
    report = finetune(model, data, steps=3, batch_size=16)
    assert report.num_classes == 10 and model[4].out_features == 10
    assert report.ok and torch.equal(model[0].weight, conv_before)
    assert report.samples == 3 * 16


def test_finetune_accepts_the_dataset_by_name() -> None:
    from freeze_widgets import finetune

    model = _tiny_classifier()
    report = finetune(model, "digits", steps=2, batch_size=16, image_size=8)
    assert report.num_classes == 10 and model[4].out_features == 10

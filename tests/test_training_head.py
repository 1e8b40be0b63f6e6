"""The shared pieces finetune and finetune_distributed both use: head, schedule, in-memory data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets import synthetic_dataset
from freeze_widgets.data.images import InMemoryImages
from freeze_widgets.data.synthetic import SyntheticShapes
from freeze_widgets.freezing.targets import freeze
from freeze_widgets.training.head import new_head, replace_head
from freeze_widgets.training.schedule import resolve_schedule


class NestedHead(nn.Module):
    """Two feature groups and a head inside ``classifier`` (as torchvision's VGG / AlexNet)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.body = nn.Linear(8, 8)
        self.classifier = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(self.stem(x)))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_new_head_is_seeded_leaves_model_and_rng_alone_and_matches_replace_head() -> None:
    torch.manual_seed(0)
    model = NestedHead().eval()
    before = _state(model)
    rng = torch.random.get_rng_state()
    found = new_head(model, 3, seed=7)
    assert found is not None
    path, layer = found
    assert path == "classifier.2"
    assert (layer.in_features, layer.out_features, layer.training) == (8, 3, False)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG did not advance
    after = _state(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # model untouched
    text = replace_head(model, 3, seed=7)
    assert text == "classifier.2: Linear(8->10) replaced by Linear(8->3)"
    swapped = model.classifier[2]
    assert isinstance(swapped, nn.Linear)
    assert torch.equal(swapped.weight, layer.weight) and torch.equal(swapped.bias, layer.bias)


def test_new_head_none_when_sizes_match_and_error_without_linear() -> None:
    assert new_head(NestedHead(num_classes=4), 4, seed=0) is None
    with pytest.raises(ValueError, match=r"no nn\.Linear head to replace"):
        new_head(nn.Sequential(nn.ReLU()), 4, seed=0)


def test_gradual_schedule_with_a_pending_nested_head_equals_the_schedule_after_replacing_it() -> (
    None
):
    planned = NestedHead()
    freeze(planned)
    # Before replacement, the classifier group is fully frozen and would be scheduled...
    assert resolve_schedule(planned, "gradual", 4) == {2: ["classifier"], 3: ["body"], 4: ["stem"]}
    # ...but it will hold the new trainable head, so it must be skipped, as after replace_head.
    pending = resolve_schedule(planned, "gradual", 4, new_head="classifier.2")
    replaced = NestedHead()
    freeze(replaced)
    replace_head(replaced, 3, seed=0)
    assert pending == resolve_schedule(replaced, "gradual", 4) == {2: ["body"], 3: ["stem"]}
    # A top-level head is skipped the same way; explicit schedules ignore new_head.
    assert resolve_schedule(planned, "gradual", 4, new_head="classifier") == pending
    assert resolve_schedule(planned, ["classifier"], 4, new_head="classifier.2") == {
        2: ["classifier"]
    }


def test_synthetic_shapes_and_digits_share_the_in_memory_dataset() -> None:
    ds = synthetic_dataset(n=6, num_classes=3, image_size=8, seed=1)
    assert isinstance(ds, SyntheticShapes) and isinstance(ds, InMemoryImages)
    assert len(ds) == ds.targets.shape[0] == 6 and ds.num_classes == len(ds.classes) == 3
    image, label = ds[4]
    assert torch.equal(image, ds.images[4]) and label == int(ds.targets[4])
    assert isinstance(label, int)
    assert repr(ds) == "SyntheticShapes(n=6, classes=3, 8x8)"

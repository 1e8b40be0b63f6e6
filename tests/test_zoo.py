"""The models people fine-tune: torchvision, timm, transformers, PEFT.

Counts and freezes run on the meta device (no forward needed, nothing allocated); BatchNorm
output checks run small models on the CPU. Each count is checked against an independent
``sum(p.numel())`` over unique tensors, and against the library's own count where it has one.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, FrozenBatchNorm, ModuleTree, freeze, unfreeze
from freeze_widgets.freezing.bn import bn_state, iter_batchnorms

from .conftest import independent_counts, requires_grad_map

META = torch.device("meta")
CPU = torch.device("cpu")


def _check_counts(model: nn.Module, label: str) -> ModuleTree:
    """Tree totals at the root and every top-level row match an independent count."""
    tree = ModuleTree(model)
    assert (tree.counts.total, tree.counts.trainable) == independent_counts(model), label
    for child in tree.root.children:
        node = tree.nodes[child]
        if node.kind == "module":
            sub = tree.module(node.path)
            assert sub is not None
            assert (node.total, node.trainable) == independent_counts(sub), (label, node.path)
    return tree


def _parameter_groups(model: nn.Module) -> list[str]:
    return [n for n, c in model.named_children() if next(c.parameters(), None) is not None]


# ---------------------------------------------------------------------- torchvision


@pytest.mark.slow
def test_every_torchvision_classifier_counts_and_freezes_on_meta() -> None:
    from torchvision import models as tvm

    from freeze_widgets import load_model

    names = tvm.list_models(module=tvm)
    assert len(names) >= 80
    for name in names:
        model = load_model(name, device="meta")
        tree = _check_counts(model, name)
        first = _parameter_groups(model)[0]
        tree.set_frozen(first, True)
        frozen_ids = {id(p) for p in model.get_submodule(first).parameters()}
        assert requires_grad_map(model) == {
            n: id(p) not in frozen_ids for n, p in model.named_parameters(remove_duplicate=False)
        }, name
        assert (tree.counts.total, tree.counts.trainable) == independent_counts(model), name


# ---------------------------------------------------------------------- timm

TIMM_MODELS = [
    "vit_tiny_patch16_224",  # root-owned cls_token and pos_embed
    "deit_tiny_distilled_patch16_224",  # two root-owned tokens
    "convnext_atto",
    "efficientnet_b0",  # BatchNormAct2d
    "swin_tiny_patch4_window7_224",
    "mixer_s16_224",
    "regnetx_002",
    "resnet18",
    "mobilenetv3_small_050",
    "edgenext_xx_small",
    "levit_128s",
    "eva02_tiny_patch14_224",
]


def _timm(name: str, device: torch.device) -> nn.Module:
    from freeze_widgets.models.hub import load_timm

    model, _ = load_timm(name, pretrained=False, device=device)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_counts_and_freeze_match_timm_utils(name: str) -> None:
    timm_utils = pytest.importorskip("timm.utils")
    ours, theirs = _timm(name, META), _timm(name, META)
    _check_counts(ours, name)
    targets = _parameter_groups(ours)[:2]
    freeze(ours, *targets, bn="train")
    timm_utils.freeze(theirs, targets, include_bn_running_stats=False)
    assert requires_grad_map(ours) == requires_grad_map(theirs)
    _check_counts(ours, name)
    freeze(ours, bn="train")
    timm_utils.freeze(theirs, include_bn_running_stats=False)
    unfreeze(ours, targets[-1])
    timm_utils.unfreeze(theirs, [targets[-1]], include_bn_running_stats=False)
    assert requires_grad_map(ours) == requires_grad_map(theirs)


def test_vit_root_owned_tokens_are_rows_and_freeze_alone() -> None:
    model = _timm("vit_tiny_patch16_224", META)
    tree = ModuleTree(model)
    assert tree.node("cls_token").kind == "parameter"
    tree.set_frozen("cls_token", True)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"cls_token"}
    assert tree.counts.frozen == model.cls_token.numel()


# ---------------------------------------------------------------------- bn="frozen" on CPU


def _randomise_bn_statistics(model: nn.Module) -> None:
    """Random-init statistics are 0 / 1; make them non-trivial so a wrong swap shows."""
    gen = torch.Generator().manual_seed(0)
    for _, bn in iter_batchnorms(model):
        if getattr(bn, "running_mean", None) is not None:
            bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=gen) - 0.5)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


def _bn_models() -> list[tuple[str, Any]]:
    def tv(name: str) -> Any:
        def build() -> nn.Module:
            from freeze_widgets import load_model

            return load_model(name, pretrained=False, device="cpu")

        return build

    return [
        ("timm:efficientnet_b0", lambda: _timm("efficientnet_b0", CPU)),
        ("timm:regnetx_002", lambda: _timm("regnetx_002", CPU)),
        ("resnet18", tv("resnet18")),
        ("mobilenet_v3_small", tv("mobilenet_v3_small")),
    ]


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Error relative to the output's scale (docs/design.md, trap 17)."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.slow
@pytest.mark.parametrize(("label", "build"), _bn_models(), ids=[m[0] for m in _bn_models()])
def test_bn_frozen_keeps_eval_output(label: str, build: Any) -> None:
    torch.manual_seed(0)
    model = build()
    _randomise_bn_statistics(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model.eval()(x)
        freeze(model, bn="frozen")
        assert all(bn_state(m) == "frozen" for _, m in iter_batchnorms(model))
        model.train()  # frozen layers stay in eval through model.train()
        # A FrozenBatchNorm ignores its flag; a layer frozen in place must keep eval.
        assert not any(
            m.training for _, m in iter_batchnorms(model) if not isinstance(m, FrozenBatchNorm)
        )
        got = model.eval()(x)  # eval: dropout would differ in train mode
    assert torch.equal(got, want) or _relative_error(got, want) < 1e-6, label
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_bn_frozen_matches_timm_freeze_on_efficientnet() -> None:
    timm_utils = pytest.importorskip("timm.utils")
    torch.manual_seed(0)
    ours = _timm("efficientnet_b0", CPU)
    _randomise_bn_statistics(ours)
    theirs = _timm("efficientnet_b0", CPU)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ours.eval()(x)
        freeze(ours, "conv_stem", "bn1", "blocks", bn="frozen")
        timm_utils.freeze(theirs, ["conv_stem", "bn1", "blocks"])
        got_ours, got_theirs = ours.eval()(x), theirs.eval()(x)
    assert torch.equal(got_ours, want)  # ours keeps the layer itself: bit for bit
    assert _relative_error(got_theirs, want) < 1e-5
    # timm turns frozen BatchNorm weights into buffers; every parameter both have agrees.
    theirs_map = requires_grad_map(theirs)
    assert theirs_map.items() <= requires_grad_map(ours).items()
    assert type(ours.bn1).__name__ == "BatchNormAct2d"  # activation kept (trap 9)
    assert bn_state(ours.bn1) == "frozen" and not ours.train().bn1.training
    unfreeze(ours)
    assert bn_state(ours.bn1) == "train" and ours.train().bn1.training
    assert all(p.requires_grad for p in ours.parameters())


# ---------------------------------------------------------------------- transformers


def _hf_configs() -> list[tuple[str, Any]]:
    transformers = pytest.importorskip("transformers")
    small = {"vocab_size": 99, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    return [
        ("gpt2", transformers.GPT2LMHeadModel, transformers.GPT2Config(
            n_embd=16, n_layer=2, n_head=2, n_positions=32, **small)),
        ("bert", transformers.BertForSequenceClassification, transformers.BertConfig(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            **small)),
        ("t5", transformers.T5ForConditionalGeneration, transformers.T5Config(
            d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2, **small)),
        ("llama", transformers.LlamaForCausalLM, transformers.LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, **small)),
        ("whisper", transformers.WhisperForConditionalGeneration, transformers.WhisperConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
            num_mel_bins=8, max_source_positions=16, max_target_positions=16,
            decoder_start_token_id=1, **small)),
    ]  # fmt: skip


@pytest.mark.slow
def test_transformers_counts_match_num_parameters_and_tied_weights_freeze_once() -> None:
    for label, cls, config in _hf_configs():
        with torch.device("meta"):
            model = cls(config)
        tree = _check_counts(model, label)
        assert tree.counts.total == model.num_parameters(), label
        embeddings = model.get_input_embeddings()
        freeze(model, *[n for n, m in model.named_modules() if m is embeddings][:1])
        assert not embeddings.weight.requires_grad, label
        tree.refresh()
        assert tree.counts.trainable == model.num_parameters(only_trainable=True), label
        if label == "gpt2":  # tied: lm_head is the embedding, frozen through either name
            assert model.lm_head.weight is embeddings.weight
            assert tree.node("lm_head").state == "frozen"


def test_peft_lora_counts_and_spec_round_trip() -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")

    def build() -> nn.Module:
        torch.manual_seed(0)
        config = transformers.LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=99,
        )
        base = transformers.LlamaForCausalLM(config)
        lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
        model: nn.Module = peft.get_peft_model(base, lora)
        return model

    model = build()
    trainable, total = model.get_nb_trainable_parameters()
    tree = _check_counts(model, "peft")
    assert (tree.counts.trainable, tree.counts.total) == (trainable, total)
    spec = FreezeSpec.from_json(FreezeSpec.from_model(model).to_json())
    fresh = build()
    unfreeze(fresh)
    spec.apply(fresh)
    assert requires_grad_map(fresh) == requires_grad_map(model)

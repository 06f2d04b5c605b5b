"""Surgery on spec-built models: every edit keeps the spec exact (round trip), the backbone
and the original model; bad edits are clear errors that leave the model as it was."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.testing import assert_close

from netarchitect import build
from netarchitect.errors import ShapeError, SpecError
from netarchitect.extend import (
    freeze,
    insert_after,
    remove_layers,
    replace_head,
    resize_token_embeddings,
    swap_modules,
    trainable_summary,
    unfreeze,
)
from netarchitect.models.bert import bert
from netarchitect.models.gpt import gpt
from netarchitect.models.resnet import resnet
from netarchitect.models.vit import vit
from netarchitect.spec import spec_hash

IMG = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
IDS = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))


def tiny_resnet() -> nn.Module:
    return resnet(widths=(8, 16, 16, 16), stem_width=8, img_size=32, num_classes=10, seed=0).eval()


def tiny_vit() -> nn.Module:
    return vit(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32, num_classes=10,
               seed=0).eval()


def tiny_bert(head: str | None = "classification") -> nn.Module:
    return bert(head=head, vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=16,
                num_classes=3, seed=0).eval()


def tiny_gpt(**kw) -> nn.Module:
    return gpt(vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=16, seed=0, **kw).eval()


def assert_round_trip(model: nn.Module, *inputs: torch.Tensor) -> None:
    """``build(model.spec)`` with ``model``'s weights is ``model`` (spec and outputs)."""
    again = build(model.spec)
    again.load_state_dict(model.state_dict())
    again.train(model.training)
    assert type(again) is type(model) and spec_hash(again.spec) == spec_hash(model.spec)
    with torch.no_grad():
        assert_close(again(*inputs), model(*inputs), rtol=0, atol=0)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor], spec_before: str) -> None:
    assert spec_hash(model.spec) == spec_before
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# --------------------------------------------------------------------------- heads

CLASSIFIERS = [(tiny_resnet, IMG), (tiny_vit, IMG), (tiny_bert, IDS)]


@pytest.mark.parametrize(("make", "x"), CLASSIFIERS, ids=["resnet", "vit", "bert"])
def test_replace_head_keeps_the_backbone(make, x) -> None:
    model = make()
    before, spec_before = snapshot(model), spec_hash(model.spec)
    new = replace_head(model, 5, seed=3)
    with torch.no_grad():
        assert_close(new.forward_features(x), model.forward_features(x), rtol=0, atol=0)
        assert new(x).shape == (2, 5)
    assert new.num_classes == 5 and new.spec.node(new.head_node).params["out_features"] == 5
    assert_round_trip(new, x)
    assert_unchanged(model, before, spec_before)
    again = replace_head(model, 5, seed=3)
    assert torch.equal(again.get_classifier().weight, new.get_classifier().weight)


def test_replace_head_zero_returns_pre_logits() -> None:
    model = tiny_resnet()
    new = replace_head(model, 0)
    with torch.no_grad():
        assert_close(new(IMG), model.forward_head(model.forward_features(IMG), pre_logits=True))
    assert new.num_classes == 0
    assert_round_trip(new, IMG)


def test_replace_head_turns_a_bert_encoder_into_a_classifier() -> None:
    model = tiny_bert(head=None)
    new = replace_head(model, 4, seed=0)
    assert new.spec.roles["kind"] == "classifier" and new(IDS).shape == (2, 4)
    with torch.no_grad():
        assert_close(new.forward_features(IDS), model.forward_features(IDS), rtol=0, atol=0)
        assert_close(new.forward_head(new.forward_features(IDS), pre_logits=True),
                     model(IDS).pooler_output, rtol=0, atol=0)  # the pooler is kept
    assert_round_trip(new, IDS)
    with pytest.raises(SpecError, match="no classifier to remove"):
        replace_head(model, 0)


def test_replace_head_on_a_spec_whose_output_is_linear() -> None:
    spec = {"name": "mlp", "inputs": {"x": {"shape": [6]}},
            "nodes": [{"id": "fc", "block": "linear", "params": {"out_features": 8}},
                      {"id": "act", "block": "relu"},
                      {"id": "out", "block": "linear", "params": {"out_features": 3}}]}
    model = build(spec, seed=0)
    new = replace_head(model, 7)
    x = torch.randn(4, 6)
    assert new(x).shape == (4, 7)
    assert torch.equal(new.nodes.fc.weight, model.nodes.fc.weight)
    assert_round_trip(new, x)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_replace_head_refuses_bad_class_counts(bad) -> None:
    with pytest.raises(SpecError, match="num_classes"):
        replace_head(tiny_resnet(), bad)


def test_replace_head_refuses_a_language_model() -> None:
    with pytest.raises(SpecError, match="no classification head"):
        replace_head(tiny_gpt(), 3)


def test_replace_head_on_plain_modules() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    new = replace_head(seq, 6, seed=0)
    assert new[2].out_features == 6 and seq[2].out_features == 3
    assert torch.equal(new[0].weight, seq[0].weight)
    assert isinstance(replace_head(seq, 0)[2], nn.Identity)

    class Timmish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.fc = nn.Linear(4, 4), nn.Linear(4, 2)

        def reset_classifier(self, n: int) -> None:
            self.fc = nn.Linear(4, n)

    assert replace_head(Timmish(), 9).fc.out_features == 9
    with pytest.raises(SpecError, match="no nn.Linear"):
        replace_head(nn.Sequential(nn.ReLU()), 2)


# --------------------------------------------------------------------------- freezing


def test_frozen_weights_are_bit_identical_after_a_step() -> None:
    model = tiny_resnet().train()
    names = freeze(model, ["stem", "s1_*"])
    assert names and all(n.startswith(("nodes.stem.", "nodes.s1_")) for n in names)
    before = snapshot(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model(IMG).square().mean().backward()
    opt.step()
    after = dict(model.named_parameters())
    for name, p in after.items():
        frozen = name in names
        assert p.requires_grad is not frozen
        assert torch.equal(p, before[name]) is frozen, name


def test_freeze_globs_match_modules_and_full_names() -> None:
    model = tiny_gpt()
    assert freeze(model, "nodes.block_0.attn*") == freeze(model, "block_0.attn")
    unfreeze(model)
    names = freeze(model, "*.weight")
    assert all(n.endswith(".weight") for n in names)
    # the tied head weight is the embedding's: freezing either name freezes both
    unfreeze(model)
    freeze(model, "head.weight")
    assert not model.tok_embed.weight.requires_grad


def test_a_glob_matching_nothing_names_close_names_and_changes_nothing() -> None:
    model = tiny_resnet()
    with pytest.raises(SpecError, match=r"'s1b0' matches nothing \(did you mean 's1_b0'"):
        freeze(model, ["stem", "s1b0"])
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(SpecError, match="top-level names: stem"):
        unfreeze(model, "zzz")
    with pytest.raises(SpecError, match="non-empty glob"):
        freeze(model, [])


def test_trainable_summary_counts_and_prints() -> None:
    model = tiny_resnet()
    freeze(model, "s1_*")
    summary = trainable_summary(model)
    frozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith("nodes.s1_"))
    total = sum(p.numel() for p in model.parameters())
    assert (summary.total, summary.trainable) == (total, total - frozen)
    data = summary.to_dict()
    assert data["frozen"] == frozen and data["groups"][0]["name"] == "stem"
    console = Console(record=True, width=120)
    trainable_summary(model, console=console)
    text = console.export_text()
    assert "s1_b0" in text and "total" in text and "0.0" in text
    assert [r[0] for r in trainable_summary(model, depth=2).rows][:2] == ["stem.conv", "stem.norm"]
    plain = trainable_summary(nn.Sequential(nn.Linear(2, 2)))
    assert plain.rows == [("0", 6, 6)] and "group" in str(Console().render_str("x")) or True
    assert trainable_summary(nn.ReLU()).table().row_count == 1


# --------------------------------------------------------------------------- layers


def test_remove_layers_depth_prunes_and_round_trips() -> None:
    model = tiny_resnet()
    before, spec_before = snapshot(model), spec_hash(model.spec)
    new = remove_layers(model, ["s2_b1", "nodes.s3_b1"])
    ids = [n.id for n in new.spec.nodes]
    assert "s2_b1" not in ids and "s3_b1" not in ids
    assert new.spec.node("s3_b0").inputs == ("s2_b0",)
    assert "s2_b1" not in new.spec.roles["stages"]
    assert torch.equal(new.nodes.s4_b1.conv1.weight, model.nodes.s4_b1.conv1.weight)
    assert_round_trip(new, IMG)
    assert_unchanged(model, before, spec_before)


def test_remove_a_transformer_block_updates_roles() -> None:
    model = tiny_gpt()
    new = remove_layers(model, "block_1")
    assert new.depth == 1 and new.spec.roles["blocks"] == ("block_0",)
    assert new.tie_embeddings
    assert_round_trip(new, IDS)
    # one block fewer is the first block's output normed and projected
    with torch.no_grad():
        h = model(IDS, return_nodes=["block_0"])["block_0"]
        assert_close(new(IDS), model.run({"block_1": h}, ["head"])["head"])


def test_remove_refuses_shapes_that_do_not_fit() -> None:
    model = tiny_resnet()
    with pytest.raises(ShapeError, match="'s2_b1' would read 's1_b1' of shape"):
        remove_layers(model, "s2_b0")
    with pytest.raises(SpecError, match="only a node with one input"):
        remove_layers(build({"inputs": {"x": [4]}, "nodes": [
            {"id": "a", "block": "linear", "params": {"out_features": 4}},
            {"id": "s", "block": "identity", "inputs": ["a", "x"], "merge": "add"}]}), "s")
    with pytest.raises(SpecError, match="matches nothing"):
        remove_layers(model, "s9_*")


def test_remove_from_plain_containers() -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    new = remove_layers(seq, ["2", "3"])
    assert [type(m) for m in new] == [nn.Linear, nn.ReLU, nn.Linear] and len(seq) == 5
    assert new(torch.randn(2, 4)).shape == (2, 3)
    with pytest.raises(ShapeError, match="'0': it maps 4 to 8 features"):
        remove_layers(seq, "0")
    with pytest.raises(ShapeError, match="'0' gives 8 features but '2' takes 6"):
        remove_layers(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 3)), "1")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    net = remove_layers(Net(), "a")
    assert isinstance(net.a, nn.Identity)
    named = nn.Sequential()
    named.add_module("first", nn.Linear(4, 4))
    named.add_module("second", nn.ReLU())
    assert list(remove_layers(named, "first")._modules) == ["second"]


def test_insert_an_identity_block_is_exact() -> None:
    model = tiny_vit()
    new = insert_after(model, "s1_b0", "identity")
    assert new.spec.node("s1_b1").inputs == ("s1_b0_identity",)
    with torch.no_grad():
        assert_close(new(IMG), model(IMG), rtol=0, atol=0)
    assert_round_trip(new, IMG)


def test_insert_a_transformer_block_joins_the_roles() -> None:
    model = tiny_gpt()
    params = dict(model.spec.node("block_1").params)
    new = insert_after(model, "block_1", {"block": "transformer_block", "params": params,
                                          "id": "block_2"}, seed=5)
    assert new.spec.roles["blocks"] == ("block_0", "block_1", "block_2")
    assert dict(new.spec.node("block_2").context) == dict(model.spec.node("block_1").context)
    assert new(IDS).shape == (2, 8, 64)
    assert_round_trip(new, IDS)
    feats = insert_after(model, "norm", {"block": "layernorm"})
    assert feats.spec.roles["features"] == "norm_layernorm"


def test_insert_refuses_bad_nodes() -> None:
    model = tiny_vit()
    with pytest.raises(ShapeError, match="cannot insert 'linear' after 's1_b0'"):
        insert_after(model, "s1_b0", {"block": "linear", "params": {"out_features": 7}})
    with pytest.raises(ShapeError, match=r"gives \(17, 8\) but the readers of 's1_b0' take"):
        insert_after(model, "s1_b0", {"block": "linear", "params": {"out_features": 8}})
    with pytest.raises(SpecError, match="node description"):
        insert_after(model, "s1_b0", nn.Identity())
    with pytest.raises(SpecError, match="one node id"):
        insert_after(model, "s1_*", "identity")
    with pytest.raises(SpecError, match="unknown key"):
        insert_after(model, "s1_b0", {"block": "identity", "parms": {}})
    with pytest.raises(SpecError, match="is taken"):
        insert_after(model, "s1_b0", {"block": "identity", "id": "s1_b1"})
    with pytest.raises(SpecError, match="matches nothing"):
        insert_after(model, "s1_b9", "identity")


def test_insert_into_plain_modules() -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    new = insert_after(seq, "1", nn.Linear(8, 8))
    assert len(new) == 4 and isinstance(new[2], nn.Linear) and len(seq) == 3
    with pytest.raises(ShapeError, match="give 8 features but it takes 4"):
        insert_after(seq, "0", nn.Linear(4, 8))
    with pytest.raises(ShapeError, match="give 8 features but it takes 4"):
        insert_after(seq, "1", nn.Linear(4, 8))  # after the ReLU: the Linear before sizes it

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

    wrapped = insert_after(Net(), "a", nn.Tanh())
    assert isinstance(wrapped.a, nn.Sequential) and isinstance(wrapped.a[1], nn.Tanh)
    with pytest.raises(SpecError, match="takes an nn.Module"):
        insert_after(seq, "0", {"block": "relu"})
    with pytest.raises(SpecError, match="matches nothing"):
        insert_after(seq, "7", nn.ReLU())


# --------------------------------------------------------------------------- swaps


def test_swap_batchnorm_for_groupnorm_keeps_shapes_and_gradients() -> None:
    model = tiny_resnet()
    before, spec_before = snapshot(model), spec_hash(model.spec)
    new = swap_modules(model, "batchnorm2d", {"name": "groupnorm", "num_groups": 4}).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in new.modules()) > 5
    assert new.spec.node("stem").params["norm_layer"] == {"name": "groupnorm", "num_groups": 4}
    assert torch.equal(new.nodes.stem.norm.weight, model.nodes.stem.norm.weight)  # weights carried
    out = new(IMG)
    assert out.shape == model(IMG).shape
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new.parameters())
    assert_round_trip(new.eval(), IMG)
    assert_unchanged(model, before, spec_before)


def test_swap_an_activation_by_class_in_a_transformer() -> None:
    model = tiny_gpt()
    new = swap_modules(model, nn.GELU, "silu")
    assert new.spec.node("block_0").params["act_layer"] == "silu"
    assert not any(isinstance(m, nn.GELU) for m in new.modules())
    assert_round_trip(new, IDS)


def test_swap_refuses_weights_without_a_place() -> None:
    model = tiny_gpt()
    with pytest.raises(ShapeError, match="bias.*has no place.*weights='init'"):
        swap_modules(model, "layernorm", "rmsnorm")
    new = swap_modules(model, "layernorm", "rmsnorm", weights="init")
    norm = new.spec.node("norm")
    assert norm.block == "rmsnorm" and norm.params == {"eps": 1e-5}
    assert_round_trip(new, IDS)


def test_swap_bad_requests() -> None:
    model = tiny_resnet()
    with pytest.raises(SpecError, match="no LayerNorm module to swap"):
        swap_modules(model, nn.LayerNorm, "rmsnorm")
    with pytest.raises(SpecError, match="unknown layer 'batchnrm2d'"):
        swap_modules(model, "batchnrm2d", "groupnorm")
    with pytest.raises(SpecError, match="unknown layer 'grupnorm'.*groupnorm"):
        swap_modules(model, "batchnorm2d", "grupnorm")
    with pytest.raises(SpecError, match="not a callable"):
        swap_modules(model, "batchnorm2d", lambda m: nn.Identity())
    with pytest.raises(SpecError, match="weights="):
        swap_modules(model, "batchnorm2d", "groupnorm", weights="copy")
    with pytest.raises(SpecError, match="module class or a layer name"):
        swap_modules(model, 3, "groupnorm")
    with pytest.raises(SpecError, match="cannot swap norm layers for the act layer 'silu'"):
        swap_modules(model, "batchnorm2d", "silu")
    with pytest.raises(SpecError, match="does not divide"):
        swap_modules(model, "batchnorm2d", {"name": "groupnorm", "num_groups": 3})


def test_swap_in_plain_modules() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GELU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        cnn[1].weight.uniform_()
    gn = swap_modules(cnn, nn.BatchNorm2d, {"name": "groupnorm", "num_groups": 2})
    assert isinstance(gn[1], nn.GroupNorm) and torch.equal(gn[1].weight, cnn[1].weight)
    out = gn(IMG)
    out.sum().backward()
    assert all(p.grad is not None for p in gn.parameters())
    act = swap_modules(cnn, (nn.GELU, nn.ReLU), "silu")
    assert isinstance(act[2], nn.SiLU) and isinstance(cnn[2], nn.GELU)
    custom = swap_modules(cnn, nn.GELU, lambda old: nn.Tanh())
    assert isinstance(custom[2], nn.Tanh)
    with pytest.raises(ShapeError, match="cannot take the weights of BatchNorm2d"):
        swap_modules(cnn, nn.BatchNorm2d, lambda old: nn.LayerNorm(3))
    fresh = swap_modules(cnn, nn.BatchNorm2d, lambda old: nn.LayerNorm(3), weights="init")
    assert isinstance(fresh[1], nn.LayerNorm)
    with pytest.raises(SpecError, match="cannot tell the channels"):
        swap_modules(cnn, nn.GELU, "layernorm")


# --------------------------------------------------------------------------- embeddings


def test_resize_keeps_tied_embeddings_tied() -> None:
    model = tiny_gpt()
    assert model.tie_embeddings
    before, spec_before = snapshot(model), spec_hash(model.spec)
    new = resize_token_embeddings(model, 80)
    assert new.tie_embeddings and new.vocab_size == 80 and new.head.weight.shape == (80, 32)
    old_w = model.tok_embed.weight
    assert torch.equal(new.tok_embed.weight[:64], old_w)
    assert_close(new.tok_embed.weight[64:], old_w.mean(0).expand(16, -1))
    with torch.no_grad():
        assert_close(new(IDS)[..., :64], model(IDS), rtol=0, atol=0)
    assert_round_trip(new, IDS)
    assert_unchanged(model, before, spec_before)
    # training the new model moves both uses of the one tensor
    new(IDS).sum().backward()
    assert new.head.weight.grad is new.tok_embed.weight.grad


def test_resize_shrinks_and_handles_untied_heads_and_biases() -> None:
    small = resize_token_embeddings(tiny_gpt(tie_embeddings=False), 48, init="random", seed=0)
    assert small.vocab_size == 48 and small.head.weight.shape == (48, 32)
    assert not small.tie_embeddings
    assert_round_trip(small, IDS % 48)
    mlm = tiny_bert(head="mlm")
    big = resize_token_embeddings(mlm, 70)
    assert big.nodes.mlm_head.bias.shape == (70,) and torch.all(big.nodes.mlm_head.bias[64:] == 0)
    assert big.nodes.mlm_head.weight is big.nodes.embed.token.weight
    assert_round_trip(big, IDS)


def test_resize_on_plain_modules() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4, padding_idx=9)
            self.out = nn.Linear(4, 10)
            self.out.weight = self.emb.weight

        def forward(self, ids):
            return self.out(self.emb(ids))

    lm = LM()
    new = resize_token_embeddings(lm, 12)
    assert new.out.weight is new.emb.weight and new.emb.weight.shape == (12, 4)
    assert new.out.bias.shape == (12,) and new.emb.padding_idx == 9
    assert resize_token_embeddings(lm, 5).emb.padding_idx is None
    assert new(torch.tensor([[11]])).shape == (1, 1, 12)
    with pytest.raises(SpecError, match="no nn.Embedding named 'nope'"):
        resize_token_embeddings(lm, 12, embedding="nope")


@pytest.mark.parametrize(("args", "match"), [((0,), "new_vocab"), ((True,), "new_vocab"),
                                             ((10,), "init=")])
def test_resize_bad_input(args, match) -> None:
    kwargs = {"init": "zeros"} if match == "init=" else {}
    with pytest.raises(SpecError, match=match):
        resize_token_embeddings(tiny_gpt(), *args, **kwargs)


def test_resize_needs_a_token_embedding() -> None:
    with pytest.raises(SpecError, match="0 token_embedding nodes"):
        resize_token_embeddings(tiny_resnet(), 10)


def test_every_surgery_chains_with_a_round_trip() -> None:
    model = tiny_bert()
    model = insert_after(model, "block_0", "identity")
    model = remove_layers(model, "block_0_identity")
    model = swap_modules(model, "gelu", "silu")
    model = resize_token_embeddings(model, 72)
    model = replace_head(model, 2)
    freeze(model, "embed")
    assert_round_trip(model, IDS)
    assert not model.nodes.embed.token.weight.requires_grad

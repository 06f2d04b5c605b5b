"""The contract every registered model keeps, driven by ``list_models()`` (never a hand-kept list).

Every model is a spec-built network: it builds on meta (``device="meta"`` and under
``with torch.device("meta"):``), takes ``seed=``/``device=``/``dtype=``, rebuilds from its
spec into the same class with the same weights, survives deepcopy and pickle, and has the
methods its kind promises.
"""

from __future__ import annotations

import copy
import functools
import pickle

import pytest
import torch

import netarchitect as na
from netarchitect.generation import generate
from netarchitect.network import Network
from netarchitect.registry import model_example

MODELS = na.list_models()


@functools.cache
def kind(name: str) -> str:
    """The network kind of a registered model (its small example built on meta)."""
    model = na.create_model(name, **model_example(name).kwargs, device="meta")
    return model.spec.roles.get("kind", "network")  # a plain Network has no roles


def small(name: str, **overrides):
    ex = model_example(name)
    return na.create_model(name, **{**ex.kwargs, "seed": 0, **overrides}), ex.inputs


def first_tensor(out):
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", MODELS)
def test_builds_on_meta_both_ways_without_allocating(name: str) -> None:
    with torch.device("meta"):
        ambient = na.create_model(name)
    explicit = na.create_model(name, device="meta")
    for model in (ambient, explicit):
        assert isinstance(model, Network) and model.spec.roles.get("kind") == explicit.spec.roles.get("kind")
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} <= {"meta"}
    assert na.spec_hash(ambient.spec) == na.spec_hash(explicit.spec)


@pytest.mark.parametrize("name", MODELS)
def test_spec_round_trip_same_class_hash_and_weights(name: str, tmp_path) -> None:
    model, inputs = small(name)
    path = na.save_spec(model.spec, tmp_path / "model.yaml")
    rebuilt = na.build(path, seed=0)
    assert type(rebuilt) is type(model)
    assert na.spec_hash(rebuilt.spec) == na.spec_hash(model.spec)
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=0, msg=key)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(first_tensor(rebuilt(*inputs)), first_tensor(model(*inputs)))


@pytest.mark.parametrize("name", MODELS)
def test_deepcopy_pickle_and_dtype(name: str) -> None:
    model, inputs = small(name)
    model.eval()
    ref = first_tensor(model(*inputs))
    # torch pickles parametrized modules (spectral norm) only through state_dict()
    pickled = () if name.endswith("_sn") else (pickle.loads(pickle.dumps(model)),)
    for clone in (copy.deepcopy(model), *pickled):
        torch.testing.assert_close(first_tensor(clone(*inputs)), ref)
    double, _ = small(name, dtype=torch.float64)
    assert {p.dtype for p in double.parameters()} == {torch.float64}


@pytest.mark.parametrize("name", [n for n in MODELS if kind(n) == "classifier"])
def test_classifier_contract(name: str) -> None:
    model, inputs = small(name)
    model.eval()
    feats = model.forward_features(*inputs)
    torch.testing.assert_close(model.forward_head(feats), model(*inputs))
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape[-1] == model.get_classifier().in_features
    assert model.feature_info and model.num_features > 0
    model.reset_classifier(3)
    assert model(*inputs).shape == (inputs[0].shape[0], 3)
    assert model.spec.node(model.head_node).params["out_features"] == 3
    assert callable(model.set_grad_checkpointing)


@pytest.mark.parametrize("name", [n for n in MODELS if kind(n) in ("causal_lm", "moe_causal_lm")])
def test_language_model_contract(name: str) -> None:
    model, (ids,) = small(name)
    model.eval()
    logits = first_tensor(model(ids))
    assert logits.shape == (*ids.shape, model.vocab_size)
    cache = model.new_cache()
    steps = [first_tensor(model(ids[:, :3], kv_cache=cache))]
    steps += [first_tensor(model(ids[:, t : t + 1], kv_cache=cache)) for t in range(3, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), logits, atol=1e-5, rtol=1e-5)
    assert cache.length == ids.shape[1] and len(cache) == model.depth
    cached = generate(model, ids[:, :4], 4, temperature=0)
    assert torch.equal(cached, generate(model, ids[:, :4], 4, temperature=0, use_cache=False))
    torch.testing.assert_close(model.head(model.forward_features(ids)), logits)


@pytest.mark.parametrize("name", [n for n in MODELS if kind(n) == "seq2seq"])
def test_seq2seq_contract(name: str) -> None:
    model, (src, tgt) = small(name)
    model.eval()
    memory = model.encode(src)
    torch.testing.assert_close(model.decode(tgt, memory), model(src, tgt))
    bound = model.bind(src)
    start = tgt[:, :1]
    assert torch.equal(generate(bound, start, 3, temperature=0),
                       generate(bound, start, 3, temperature=0, use_cache=False))


@pytest.mark.parametrize("name", [n for n in MODELS if kind(n) in ("encoder", "bert")])
def test_encoder_contract(name: str) -> None:
    model, inputs = small(name)
    model.eval()
    feats = model.forward_features(*inputs)
    assert feats.shape[0] == inputs[0].shape[0] and feats.shape[-1] == model.dim
    assert model.blocks and model.checkpoint_nodes() == frozenset(model.spec.roles["blocks"])

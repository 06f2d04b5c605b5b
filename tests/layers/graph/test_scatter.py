"""scatter / segment_softmax / degree / self loops / spmm against dense references."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from netarchitect.layers.graph.scatter import (
    CSR,
    TensorCache,
    add_remaining_self_loops,
    add_self_loops,
    degree,
    remove_self_loops,
    scatter,
    segment_softmax,
    spmm,
)


def _dense_reduce(src: torch.Tensor, index: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    rows = []
    for i in range(n):
        sel = src[index == i]
        if sel.shape[0] == 0:
            rows.append(src.new_zeros(src.shape[1:]))
        elif reduce == "sum":
            rows.append(sel.sum(0))
        elif reduce == "mean":
            rows.append(sel.mean(0))
        elif reduce == "max":
            rows.append(sel.amax(0))
        else:
            rows.append(sel.amin(0))
    return torch.stack(rows)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("trailing", [(), (3,), (2, 3)])
def test_scatter_matches_loop(reduce: str, trailing: tuple[int, ...]) -> None:
    src = torch.randn(12, *trailing)
    index = torch.tensor([0, 0, 2, 2, 2, 5, 5, 0, 1, 2, 5, 5])  # nodes 3, 4, 6 are empty
    out = scatter(src, index, 7, reduce)
    assert out.shape == (7, *trailing)
    assert_close(out, _dense_reduce(src, index, 7, reduce))


def test_scatter_empty_and_bad_reduce() -> None:
    out = scatter(torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 3, "max")
    assert_close(out, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="reduce='prod'"):
        scatter(torch.randn(2), torch.zeros(2, dtype=torch.long), 1, "prod")


@pytest.mark.parametrize("heads", [(), (4,)])
def test_segment_softmax(heads: tuple[int, ...]) -> None:
    src = torch.randn(9, *heads) * 30  # large logits: must stay stable
    index = torch.tensor([1, 1, 1, 3, 3, 0, 1, 3, 0])
    out = segment_softmax(src, index, 5)
    for i in range(5):
        sel = index == i
        if sel.any():
            assert_close(out[sel], torch.softmax(src[sel], dim=0))
    assert torch.isfinite(out).all()


def test_degree() -> None:
    index = torch.tensor([0, 2, 2, 3])
    assert_close(degree(index, 5), torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0]))
    assert degree(index, 5, dtype=torch.long).dtype == torch.long


def test_self_loops() -> None:
    ei = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 0]])
    attr = torch.tensor([[1.0], [2.0], [3.0], [5.0]])
    kept, kept_attr = remove_self_loops(ei, attr)
    assert kept.tolist() == [[0, 2, 2], [1, 0, 0]]
    assert kept_attr.flatten().tolist() == [1.0, 3.0, 5.0]
    assert remove_self_loops(ei)[1] is None
    looped, none = add_self_loops(ei, 3)
    assert none is None
    assert looped[:, 4:].tolist() == [[0, 1, 2], [0, 1, 2]]
    _, filled = add_self_loops(ei, 3, attr, fill=7.0)
    assert filled[4:].flatten().tolist() == [7.0, 7.0, 7.0]
    _, mean = add_self_loops(ei, 3, attr, fill="mean")
    assert mean[4:].flatten().tolist() == [4.0, 1.5, 0.0]  # node 2 has no incoming edges
    _, given = add_self_loops(ei, 3, attr, fill=torch.tensor([9.0]))
    assert given[4:].flatten().tolist() == [9.0, 9.0, 9.0]


def _graph(n: int = 9, e: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 2, (2, e), generator=g)  # nodes n-2, n-1 isolated
    return torch.cat([ei, ei[:, :3], torch.tensor([[1, 2], [1, 2]])], dim=1)  # multi-edges, loops


def _reference(ei: torch.Tensor, w: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    dense = torch.zeros(n, x.shape[0], dtype=x.dtype).index_put_((ei[1], ei[0]), w, accumulate=True)
    return dense @ x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_spmm_values_and_gradients(weighted: bool, reduce: str) -> None:
    ei = _graph()
    n = 9
    x = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(ei.shape[1], dtype=torch.float64, requires_grad=True) if weighted else None
    out = spmm(ei, w, x, n, reduce)
    ref = _reference(ei, w if weighted else torch.ones(ei.shape[1], dtype=x.dtype), x, n)
    if reduce == "mean":
        ref = ref / degree(ei[1], n, dtype=x.dtype).clamp(min=1)[:, None]
    assert_close(out, ref)
    grad = torch.randn_like(out)
    leaves = (x, w) if weighted else (x,)
    assert_close(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad))
    if weighted:
        torch.autograd.gradcheck(lambda a, b: spmm(ei, b, a, n, reduce), (x, w))


def test_spmm_bipartite_multidim_and_empty() -> None:
    ei = torch.tensor([[0, 3, 3, 1], [1, 0, 0, 1]])  # 4 sources -> 2 targets
    x = torch.randn(4, 2, 3)
    out = spmm(ei, None, x, 2)
    assert out.shape == (2, 2, 3)
    assert_close(out.flatten(1), _reference(ei, torch.ones(4), x, 2))
    empty = spmm(torch.zeros(2, 0, dtype=torch.long), None, x, 4)
    assert_close(empty, torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match="reduce"):
        spmm(ei, None, x, 2, "max")


def test_spmm_structure_reuse_and_fallback() -> None:
    from netarchitect.layers.graph import scatter as module

    ei, n = _graph(), 9
    x = torch.randn(n, 4)
    csr = CSR(ei, n)
    assert_close(spmm(ei, None, x, n, csr=csr), spmm(ei, None, x, n))
    assert spmm(ei, None, x, n) is not None  # second call hits the per-tensor cache
    ei2 = ei.clone()
    ei2[0, 0] = 8
    ei2.add_(0)  # in-place change bumps the version: the cache must not be reused
    assert_close(spmm(ei2, None, x, n), _reference(ei2, torch.ones(ei2.shape[1]), x, n))
    graphs = [_graph(seed=seed) for seed in range(10)]  # alive: fill the cache past its size
    for graph in graphs:
        spmm(graph, None, x, n)
    assert len(module._CACHE) <= module._CACHE.size
    meta = spmm(ei.to("meta"), None, x.to("meta"), n)  # index_add path on meta
    assert meta.shape == (n, 4) and meta.device.type == "meta"


def test_add_remaining_self_loops_matches_pyg() -> None:
    utils = pytest.importorskip("torch_geometric.utils")
    ei = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 0]])
    w = torch.tensor([1.0, 2.0, 3.0, 5.0])
    ours = add_remaining_self_loops(ei, 3, w, fill=0.5)
    ref = utils.add_remaining_self_loops(ei, w, 0.5, 3)
    assert torch.equal(ours[0], ref[0])
    assert_close(ours[1], ref[1])
    assert add_remaining_self_loops(ei, 3)[1] is None


def test_spmm_cache_is_freed_with_the_graph() -> None:
    from netarchitect.layers.graph import scatter as module

    ei = _graph(seed=42)
    spmm(ei, None, torch.randn(9, 2), 9)
    assert ei in module._CACHE
    before = len(module._CACHE)
    del ei
    assert len(module._CACHE) == before - 1


def test_tensor_cache_keys_identity_versions_and_size() -> None:
    cache, made = TensorCache(size=2), []

    def make(tag):
        return lambda: made.append(tag) or tag

    a, b = torch.arange(3), torch.arange(2)
    assert cache.get((a, None), "k", make("a")) == "a"
    assert cache.get((a, None), "k", make("again")) == "a"  # hit
    assert cache.get((a, b), "k", make("ab")) == "ab"  # another second tensor
    assert cache.get((a, b.clone()), "k", make("ab2")) == "ab2"  # identity, not values
    assert cache.get((a, None), "other", make("other")) == "other"  # keys share a tensor
    assert len(cache) == 2 and a in cache and b not in cache
    assert cache.get((b, None), "k", make("b")) == "b"  # evicts the oldest entry
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and made == ["a", "ab", "ab2", "other", "b"]

"""parallelize(): one training step under DDP, FSDP2, TP, sequence parallel and FSDP x TP on
two real gloo processes equals the single-process step (loss and every gradient)."""

import numpy as np
import pytest

from netarchitect.parallel.apply import mesh_dims, parallelize
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.mesh import make_mesh
from netarchitect.parallel.plan import ParallelPlan, derive_plan
from tests.parallel import _ranks_plans as R


@pytest.fixture(scope="module")
def two_ranks():
    return [r["parity"] for r in R.two_rank_results()]


@pytest.fixture(scope="module")
def references():
    out = {}
    for name, (build, batch) in R.BUILDERS.items():
        model = build()
        out[name] = R.step(model, model, *batch())
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "model", "shape", "plan", "split"), R.LAYOUTS,
                         ids=[f"{m}-{n}" for n, m, *_ in R.LAYOUTS])
def test_one_step_equals_single_process(two_ranks, references, layout, model, shape, plan, split):
    key = f"{model}/{layout}"
    losses = [two_ranks[r][key]["loss"] for r in range(2)]
    # data parallel: each rank's mean loss over its half; tensor parallel: the same loss
    loss = sum(losses) / 2 if split else losses[0]
    if not split:
        assert losses[0] == pytest.approx(losses[1], abs=1e-12)
    ref = references[model]
    assert loss == pytest.approx(ref["loss"], abs=1e-12)
    for rank in range(2):
        grads = two_ranks[rank][key]["grads"]
        assert grads.keys() == ref["grads"].keys()
        for name, grad in ref["grads"].items():
            np.testing.assert_allclose(grads[name], grad, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_user_mistakes_on_two_ranks(two_ranks):
    assert two_ranks[0]["errors"] == [
        "mesh for world size 3 but 2 processes are running",
        "mesh dp=2 x tp=2 x pp=1 = 4 ranks does not match the world size 2",
        "the plan is for tp=1 but the mesh has tp=2",
        ("plan entry 'nodes.nope.*' matches no module of CausalLM "
        "(did you mean 'nodes.norm', 'nodes.head', 'nodes.embed'?)"),
        "DDP (fsdp=False) does not combine with tensor parallel: use FSDP2",
    ]


# ---------------------------------------------------------------- one process (in this one)


def test_single_rank_layouts_run_the_same_step(one_rank):
    from torch.distributed.device_mesh import init_device_mesh

    model = R.tiny_gpt()
    ref = R.step(model, model, *R.gpt_batch())
    for mesh, plan in [
        (make_mesh(tp=1), derive_plan(R.tiny_gpt()).override("*.attn.fn.?_proj", tp="colwise")
         .override("*.attn.fn.out_proj", tp="rowwise")),
        (init_device_mesh("cpu", (1,), mesh_dim_names=("dp",)), {"fsdp": False}),
        (init_device_mesh("cpu", (1,), mesh_dim_names=("tp",)), "auto"),
    ]:
        model = R.tiny_gpt()
        out = R.step(parallelize(model, mesh, plan), model, *R.gpt_batch())
        assert out["loss"] == pytest.approx(ref["loss"], abs=1e-12)
        for name, grad in ref["grads"].items():
            np.testing.assert_allclose(out["grads"][name], grad, atol=1e-12, err_msg=name)


def test_ddp_wraps_and_refuses_tensor_parallel(one_rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.nn.parallel import DistributedDataParallel

    model = R.tiny_resnet()
    mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("dp",))
    wrapped = parallelize(model, mesh, derive_plan(model, fsdp=False))
    assert isinstance(wrapped, DistributedDataParallel) and wrapped.module is model
    plan = derive_plan(R.tiny_gpt(), fsdp=False).override("*.fc1", tp="colwise")
    with pytest.raises(ParallelError, match="DDP .fsdp=False. does not combine with tensor"):
        parallelize(R.tiny_gpt(), make_mesh(), plan)
    with pytest.raises(ParallelError, match="the plan is for tp=2 but the mesh has tp=1"):
        parallelize(R.tiny_gpt(), make_mesh(), {"tp": 2})
    with pytest.raises(ParallelError, match="mesh for world size 3 but 1 processes are running"):
        make_mesh(3)


def test_sequence_parallel_on_one_rank(one_rank):
    model = R.tiny_gpt()
    ref = R.step(model, model, *R.gpt_batch())
    model = R.tiny_gpt()
    plan = derive_plan(model, tp=2, sequence_parallel=True)
    plan = ParallelPlan.from_dict({**plan.to_dict(), "tp": 1})  # the same styles, one rank
    out = R.step(parallelize(model, make_mesh(tp=1), plan), model, *R.gpt_batch())
    assert out["loss"] == pytest.approx(ref["loss"], abs=1e-12)


def test_meshes_need_named_dims(one_rank):
    from torch.distributed.device_mesh import init_device_mesh

    with pytest.raises(ParallelError, match="named dimensions 'dp' and/or 'tp'.*got None"):
        mesh_dims(init_device_mesh("cpu", (1,)))
    with pytest.raises(ParallelError, match=r"got \('cp',\)"):
        mesh_dims(init_device_mesh("cpu", (1,), mesh_dim_names=("cp",)))


def test_a_plan_changed_after_derivation_is_checked(one_rank):
    from netarchitect.parallel.apply import _localise_heads, apply_tensor_parallel

    model = R.tiny_gpt()
    plan = derive_plan(model).override("*.attn.fn.q_proj", tp="colwise")
    with pytest.raises(ParallelError, match=r"nodes.block_0.attn.fn: tensor parallel needs "
                       r"q/k/v_proj colwise and out_proj rowwise together, the plan has "
                       r"\{'q_proj': 'colwise', 'k_proj': None"):
        _localise_heads(model, plan, 2)
    _localise_heads(model, derive_plan(model).override("*.fc1", tp="colwise"), 2)
    assert model.nodes.block_0.attn.fn.num_heads == 2  # attention not sharded: heads kept
    plan = derive_plan(model, tp=2)
    with pytest.raises(ParallelError, match=r"nodes.block_0.attn.fn: 2 heads \(2 kv\) do not "
                       "divide over tp=4"):
        _localise_heads(model, plan, 4)
    apply_tensor_parallel(model, derive_plan(model), make_mesh(tp=1)["tp"])  # nothing to do
    assert not any(hasattr(p, "placements") for p in model.parameters())

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from netarchitect.meta.episodes import EpisodeSampler
from netarchitect.meta.errors import FewShotError
from netarchitect.meta.maml import MAML, train_maml

D, ALPHA = 4, 0.1


def _linear_task(seed: int):
    g = torch.Generator().manual_seed(seed)
    xs, xq = (
        torch.randn(6, D, generator=g, dtype=torch.float64),
        torch.randn(5, D, generator=g, dtype=torch.float64),
    )
    return (
        xs,
        torch.randn(6, 1, generator=g, dtype=torch.float64),
        xq,
        torch.randn(5, 1, generator=g, dtype=torch.float64),
    )


def _grad_mse(theta, x, y):  # ∇θ mean((xθ - y)²) and its Hessian
    n = x.numel() // D
    return 2 / n * x.T @ (x @ theta - y), 2 / n * x.T @ x


def _linear_maml(**kw):
    torch.manual_seed(0)
    model = nn.Linear(D, 1, bias=False).double()
    return model, MAML(model, inner_lr=ALPHA, loss_fn=F.mse_loss, **kw)


@pytest.mark.parametrize("first_order", [False, True])
def test_two_step_meta_gradient_matches_hand_unrolled(first_order):
    model, maml = _linear_maml(inner_steps=2, first_order=first_order)
    xs, ys, xq, yq = _linear_task(0)
    maml.meta_loss(xs[None], ys[None], xq[None], yq[None]).backward()
    theta = model.weight.detach().T.clone()  # (D, 1)
    g0, hess = _grad_mse(theta, xs, ys)
    theta1 = theta - ALPHA * g0
    theta2 = theta1 - ALPHA * _grad_mse(theta1, xs, ys)[0]
    gq = _grad_mse(theta2, xq, yq)[0]
    jac = (
        torch.eye(D, dtype=torch.float64) - ALPHA * hess
    )  # dθ_{k+1}/dθ_k (constant: quadratic loss)
    expected = gq if first_order else jac @ jac @ gq  # FO: ∇L_q(θ') alone
    torch.testing.assert_close(model.weight.grad.T, expected, atol=1e-6, rtol=0)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))


def _batch(tasks=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(tasks, 6, 3, 4, generator=g),
        torch.randint(0, 3, (tasks, 6), generator=g),
        torch.randn(tasks, 9, 3, 4, generator=g),
        torch.randint(0, 3, (tasks, 9), generator=g),
    )


def _grads(maml, loss):
    maml.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in maml.parameters()]


@pytest.mark.parametrize(
    "kw",
    [{}, {"first_order": True}, {"learn_lr": True}, {"adapt": ["3"]}, {"inner_steps": 3}],
)
def test_vmap_equals_python_loop(kw):
    maml = MAML(_mlp(), inner_lr=0.3, **kw)
    batch = _batch()
    a, b = maml.meta_loss(*batch), maml.meta_loss_loop(*batch)
    torch.testing.assert_close(a, b)
    for ga, gb in zip(
        _grads(maml, maml.meta_loss(*batch)), _grads(maml, maml.meta_loss_loop(*batch))
    ):
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)


def test_loop_equals_single_task_mean():
    maml = MAML(_mlp())
    batch = _batch(3)
    per_task = [maml.meta_loss(*(t[i : i + 1] for t in batch)) for i in range(3)]
    torch.testing.assert_close(maml.meta_loss(*batch), torch.stack(per_task).mean())


def test_meta_sgd_learning_rates_receive_gradients():
    maml = MAML(_mlp(), inner_lr=0.2, learn_lr=True)
    assert len(maml.lrs) == 4
    for lr, p in zip(maml.lrs, maml.model.parameters()):
        assert lr.shape == p.shape and torch.all(lr == 0.2)
    maml.meta_loss(*_batch()).backward()
    for lr in maml.lrs:
        assert lr.grad is not None and lr.grad.abs().sum() > 0
    # a learned per-parameter rate changes the adaptation
    before = maml.meta_loss(*_batch()).item()
    with torch.no_grad():
        maml.lrs[0].mul_(3)
    assert maml.meta_loss(*_batch()).item() != before


def test_anil_adapts_only_the_head():
    maml = MAML(_mlp(), inner_lr=0.5, adapt=["3"])
    assert maml.adapt_names == ["3.weight", "3.bias"]
    params, buffers = maml._state()
    sx, sy, _, _ = _batch(1)
    adapted = maml.adapt_params(params, buffers, sx[0], sy[0])
    for name in ("1.weight", "1.bias"):
        assert adapted[name] is params[name]
    for name in ("3.weight", "3.bias"):
        assert not torch.equal(adapted[name], params[name])
    maml.meta_loss(*_batch()).backward()  # the body is still meta-learned
    assert maml.model[1].weight.grad.abs().sum() > 0


def test_forward_adapts_and_checks_ways():
    maml = MAML(_mlp(), inner_lr=0.5)
    sx, sy, qx, _ = _batch(1)
    logits = maml(sx[0], sy[0], qx[0], 3)
    assert logits.shape == (9, 3)
    assert not torch.allclose(logits, maml.model(qx[0]))
    with torch.no_grad():  # torch.func.grad still adapts under no_grad
        torch.testing.assert_close(maml(sx[0], sy[0], qx[0], 3), logits.detach())
    with pytest.raises(FewShotError, match="n_way: 5 but the model outputs 3"):
        maml(sx[0], sy[0], qx[0], 5)


def test_train_maml_reduces_loss():
    torch.manual_seed(0)
    y = torch.arange(6).repeat_interleave(10)
    x = F.one_hot(y, 6).float().view(-1, 1, 2, 3) + 0.3 * torch.randn(60, 1, 2, 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    maml = MAML(net, inner_lr=1.0)
    sampler = EpisodeSampler(x, y, n_way=3, k_shot=2, n_query=3, seed=0)
    losses = train_maml(maml, sampler, steps=40, meta_batch=4, lr=0.01)
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])  # measured 8.52 -> 4.81


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"adapt": ["head"]}, "adapt"),
        ({"adapt": []}, "adapt"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(FewShotError, match=argument):
        MAML(_mlp(), **kwargs)


def test_train_bad_arguments():
    maml = MAML(_mlp())
    with pytest.raises(FewShotError, match="steps"):
        train_maml(maml, None, steps=0)

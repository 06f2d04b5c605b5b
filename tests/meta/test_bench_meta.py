import torch

from benchmarks.bench_meta import INNER_LR, conv_net, loop_meta_loss, mlp
from netarchitect.meta.maml import MAML


def test_autograd_loop_peer_matches_vmapped_maml():
    """The benchmark's learn2learn-style peer computes the same meta-gradient as ours."""
    g = torch.Generator().manual_seed(0)
    batch = (
        torch.rand(3, 5, 1, 16, 16, generator=g),
        torch.randint(0, 5, (3, 5), generator=g),
        torch.rand(3, 10, 1, 16, 16, generator=g),
        torch.randint(0, 5, (3, 10), generator=g),
    )
    for make in (mlp, conv_net):
        torch.manual_seed(0)
        ours, peer = make(), make()
        peer.load_state_dict(ours.state_dict())
        MAML(ours, inner_lr=INNER_LR).meta_loss(*batch).backward()
        loop_meta_loss(peer, batch, INNER_LR).backward()
        for a, b in zip(ours.parameters(), peer.parameters()):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)

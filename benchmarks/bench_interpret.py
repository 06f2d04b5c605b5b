"""Attributions on ResNet-50 at 224×224, batch 1: ours vs Captum (0.9), same process, alternating.

``python -m benchmarks.bench_interpret`` (float32, 2 threads); results go to
``benchmarks/results/interpret.json``. The same model (eval mode, seeded weights) and input
for both; attributions are checked equal before timing. Cases and target ratios
(ours / Captum):

* ``ig_resnet50_224_64steps``: :func:`~netarchitect.analysis.attribution.integrated_gradients`
  vs ``captum.attr.IntegratedGradients`` — 64 Gauss–Legendre steps, the same internal batch
  (:data:`IG_CHUNK` interpolated images per forward/backward), both returning the
  completeness gap — ≤ 1.0;
* ``gradcam_resnet50_224``: :func:`~netarchitect.analysis.attribution.grad_cam` vs
  ``captum.attr.LayerGradCam`` (``relu_attributions=True``) on the last stage — ≤ 1.0.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect import create_model
from netarchitect.analysis.attribution import grad_cam, integrated_gradients, resolve_layer

NAME = "interpret"
STEPS, IG_CHUNK, TARGET_CLASS = 64, 16, 207


def run(
    *, warmup: int, repeats: int, threads: int, results_dir: str = RESULTS_DIR,
    steps: int = STEPS,
) -> dict[str, Any]:
    from captum.attr import IntegratedGradients, LayerGradCam

    torch.manual_seed(0)
    model = create_model("resnet50", seed=0).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    layer = model.feature_info[-1]["node"]
    module = resolve_layer(model, layer)
    ig, cam = IntegratedGradients(model), LayerGradCam(model, module)

    def ours_ig() -> Any:
        return integrated_gradients(model, x, TARGET_CLASS, steps=steps,
                                    internal_batch_size=min(IG_CHUNK, steps))

    def peer_ig() -> Any:
        return ig.attribute(x, target=TARGET_CLASS, n_steps=steps, method="gausslegendre",
                            internal_batch_size=min(IG_CHUNK, steps),
                            return_convergence_delta=True)

    def ours_cam() -> Any:
        return grad_cam(model, x, TARGET_CLASS, layer)

    def peer_cam() -> Any:
        return cam.attribute(x, target=TARGET_CLASS, relu_attributions=True)

    torch.testing.assert_close(ours_cam(), peer_cam(), rtol=1e-4, atol=1e-6)
    mine, (theirs, _) = ours_ig(), peer_ig()
    torch.testing.assert_close(mine.attributions, theirs, rtol=1e-4, atol=1e-6)
    common = {"model": "resnet50", "input": "1x3x224x224", "dtype": "float32"}
    cases = (  # the cheap case first: its result is recorded even if IG is cut short
        ("gradcam_resnet50_224", ours_cam, peer_cam, "LayerGradCam", {**common, "layer": layer}),
        (f"ig_resnet50_224_{steps}steps", ours_ig, peer_ig, "IntegratedGradients",
         {**common, "steps": steps, "internal_batch_size": min(IG_CHUNK, steps)}),
    )
    return {
        case: compare(NAME, ours, peer, case=case, target=1.0, label_ours="netarchitect",
                      label_peer=f"captum {label}", extra=extra, warmup=warmup,
                      repeats=repeats, threads=threads, results_dir=results_dir)
        for case, ours, peer, label, extra in cases
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=1, repeats=5)
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"IG steps (default {STEPS}, the target case; fewer for a quick look)")
    args = parse_args(parser, argv)
    return run(warmup=args.warmup, repeats=args.repeats, threads=args.threads,
               results_dir=args.results_dir, steps=args.steps)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`netarchitect design` targets (issue 7), recorded in ``benchmarks/results/search.json``.

1. **default run**: ``design()`` with every default (digits, packaged space, 50k
   parameters, accuracy + MACs, ``DEFAULT_TRIALS`` trials, one worker per core):
   wall time <= 300 s on 2 cores; its Pareto front holds a model with >= 98.5 %
   test accuracy within 50k parameters and one with >= 97 % under 5k parameters.
2. **NSGA-II + our early stopping vs random search** over 3 seeds at equal
   trained-trial counts (one in-process worker each): the time NSGA-II needs to
   reach the hypervolume random search ends with, divided by random search's
   wall time, must be <= 0.6 (median over the seeds). Hypervolume is over
   (validation accuracy, MACs) of completed trials, reference point
   (0, 1.1 x the largest MACs either run saw); times are measured between the
   first trial's start and the trials' completions (imports, reporting and the
   final test evaluation excluded).

Run: ``python -m benchmarks.bench_search [--quick]`` (``--quick``: a smoke run
with a few trials; its figures are not the targets).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from netarchitect.search import DEFAULT_TRIALS, design, hypervolume

try:  # the shared results format of benchmarks/harness.py
    from benchmarks.harness import _save, _stats, machine_info
except ImportError:  # pragma: no cover - run outside the repository
    _save = None

NAME = "search"
DIRECTIONS = ["maximize", "minimize"]


def default_run(out: Path, trials: int, console: Console) -> dict[str, Any]:
    """The embedded default run; returns its wall time and what its front holds."""
    start = time.perf_counter()
    result = design(out=out, trials=trials, console=console)
    wall = time.perf_counter() - start
    within = [f["test_acc"] for f in result.final if f["params"] <= 50_000]
    small = [f["test_acc"] for f in result.final if f["params"] < 5_000]
    best, best_small = max(within, default=0.0), max(small, default=0.0)
    return {
        "wall_s": wall,
        "trials": trials,
        "front": result.final,
        "best_test_acc_50k": best,
        "best_test_acc_under_5k": best_small,
        "targets": {
            "wall_s <= 300": wall <= 300,
            "test_acc >= 98.5% within 50k": best >= 0.985,
            "test_acc >= 97% under 5k": best_small >= 0.97,
        },
    }


def _curve(study: Any) -> tuple[float, list[tuple[float, float, float]]]:
    """(wall time, [(seconds since the first start, accuracy, MACs) per completed trial])."""
    trials = [t for t in study.get_trials() if t.datetime_start is not None]
    t0 = min(t.datetime_start for t in trials)
    done = [t for t in trials if t.datetime_complete is not None]
    end = max(t.datetime_complete for t in done)
    points = sorted(
        ((t.datetime_complete - t0).total_seconds(), t.values[0], t.values[1])
        for t in done
        if t.state.name == "COMPLETE"
    )
    return (end - t0).total_seconds(), points


def _time_to_reach(
    points: list[tuple[float, float, float]], target: float, ref: list[float]
) -> float:
    for i, (t, _, _) in enumerate(points):
        if hypervolume([p[1:] for p in points[: i + 1]], DIRECTIONS, ref) >= target:
            return t
    return float("inf")


def strategy_pair(out: Path, seed: int, trials: int, console: Console) -> dict[str, Any]:
    """NSGA-II with early stopping and random search without, at equal trained-trial counts."""
    runs = {}
    for label, sampler, prune in (("random", "random", False), ("nsga2_es", "nsga2", True)):
        result = design(
            out=out,
            study=f"{label}_{seed}",
            sampler=sampler,
            prune=prune,
            seed=seed,
            trials=trials,
            workers=0,
            console=console,
        )
        runs[label] = _curve(result.study)
    worst = 1.1 * max(p[2] for _, pts in runs.values() for p in pts)
    random_wall, random_points = runs["random"]
    nsga_wall, nsga_points = runs["nsga2_es"]
    out: dict[str, Any] = {"seed": seed, "random_wall_s": random_wall, "nsga2_es_wall_s": nsga_wall}
    # The target uses MACs as they are; log10(MACs) (costs span three orders of magnitude, where a
    # linear axis makes the hypervolume almost only the best accuracy) is reported beside it.
    for scale, f in (("", lambda m: m), ("log_", math.log10)):
        ref = [0.0, f(worst)]
        rnd = [(a, f(m)) for _, a, m in random_points]
        nsg = [(t, a, f(m)) for t, a, m in nsga_points]
        hv_random = hypervolume(rnd, DIRECTIONS, ref)
        reach = _time_to_reach(nsg, hv_random, ref)
        out.update(
            {
                f"{scale}hv_random": hv_random,
                f"{scale}hv_nsga2_es": hypervolume([p[1:] for p in nsg], DIRECTIONS, ref),
                f"{scale}nsga2_es_time_to_random_hv_s": _finite(reach),  # None: never reached
                f"{scale}ratio": _finite(reach / random_wall),
            }
        )
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _median_ratio(pairs: list[dict[str, Any]], key: str) -> float | None:
    """Median over seeds; a seed that never reached random's hypervolume counts as infinite."""
    return _finite(statistics.median(math.inf if p[key] is None else p[key] for p in pairs))


def _record(
    case: str,
    ours_s: list[float],
    peer_s: list[float] | None,
    ratio: float | None,
    target: float | None,
    extra: dict[str, Any],
) -> None:
    if _save is None or case.endswith("_quick"):  # smoke runs are not results
        return
    entry = {
        "case": case,
        "ours": _stats("netarchitect", ours_s),
        "peer": _stats("random search", peer_s) if peer_s else None,
        "ratio": ratio,
        "target": target,
        "warmup": 0,
        "repeats": len(ours_s),
        "extra": extra,
        "machine": machine_info(2),
    }
    _save(NAME, case, entry, Path(__file__).parent / "results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with a few trials")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--pair-trials", type=int, default=30, help="trained trials per strategy run"
    )
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--skip-pairs", action="store_true")
    args = parser.parse_args(argv or [])  # `make bench` calls main() with no arguments
    console = Console()
    trials, pair_trials, seeds = (
        (4, 4, 1) if args.quick else (DEFAULT_TRIALS, args.pair_trials, args.seeds)
    )
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        if not args.skip_default:
            d = default_run(Path(tmp) / "default", trials, console)
            console.print({k: v for k, v in d.items() if k != "front"})
            _record(
                "default_run" + ("_quick" if args.quick else ""), [d["wall_s"]], None, None, None, d
            )
        if not args.skip_pairs:
            pairs = [
                strategy_pair(Path(tmp) / "pairs", seed, pair_trials, console)
                for seed in range(seeds)
            ]
            for p in pairs:
                console.print(p)
            ratio = _median_ratio(pairs, "ratio")
            extra = {
                "log_macs_ratio_median": _median_ratio(pairs, "log_ratio"),
                "pairs": pairs,
                "trials_per_run": pair_trials,
                "met": ratio is not None and ratio <= 0.6,
                "hv_nsga2_es_ge_random": [p["hv_nsga2_es"] >= p["hv_random"] for p in pairs],
            }
            _record(
                "nsga2_es_vs_random" + ("_quick" if args.quick else ""),
                [p["nsga2_es_time_to_random_hv_s"] or math.inf for p in pairs],
                [p["random_wall_s"] for p in pairs],
                ratio,
                0.6,
                extra,
            )
            console.print(
                f"median (NSGA-II+ES time to random's HV) / (random wall time) = {ratio} "
                f"(target <= 0.6; never reached: None)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

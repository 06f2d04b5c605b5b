"""`netarchitect design` targets, recorded in ``benchmarks/results/search.json``.

1. **default run** (case ``default_run``): ``design()`` with every default (digits,
   packaged space, 50k parameters, accuracy + MACs, ``DEFAULT_TRIALS`` trials, one
   worker per core) for seeds 0, 1 and 2. Targets, on every seed: wall time about
   4-5 minutes on 2 cores (<= 300 s); among the chosen models, test accuracy
   >= 98.5 % within 50k parameters and >= 97 % for some model with <= 5k parameters.
2. **early stopping** (case ``early_stopping``): the same search (defaults, same
   seed) with and without the early-stopping rule, run at the same time as two
   ``netarchitect design --workers 1`` processes so that both meet the same load
   on the shared machine. Hypervolume of the fully trained trials over
   (validation accuracy, log10 MACs) with reference point (90 % accuracy,
   log10(1.1 x the largest MACs either run trained)), measured at equal wall time
   T = the shorter run's wall time (seconds since its first trial started). The
   recorded ratio is HV(without) / HV(with) at T (lower is better, like every
   ours / peer ratio; <= 1: early stopping reaches at least the same front in
   the same time); HV(with) / HV(without) is printed beside it, as is the ratio
   at the end of both runs (equal trial counts). Direct check: the rule is
   replayed on every trial of the run *without* early stopping (references: the
   trials fully trained before it started); the trials it would have stopped
   that ended on that run's Pareto front are counted (``false_stops``; 0 wanted)
   and the hypervolume that run keeps without all the trials it would have
   stopped is reported (``replayed_stops_hv_kept``; 1 wanted).
3. **NSGA-II + our early stopping vs random search** (case ``nsga2_es_vs_random``)
   over 3 seeds at equal trained-trial counts (one in-process worker each): the
   time NSGA-II needs to reach the hypervolume random search ends with, divided
   by random search's wall time, must be <= 0.6 (median over the seeds).
   Hypervolume over (validation accuracy, MACs), reference (0, 1.1 x the
   largest MACs either run saw).

Run: ``python -m benchmarks.bench_search [--quick] [--only default,es,pairs]``; CPU time
(``cpu_s``: CPU time / 2 estimates the wall time on two idle cores) and the CPU model are
recorded with the results.
(``--quick``: a smoke run with a few trials; its figures are not results). The
machine is shared: wall times are slower than on an idle machine, so the load
average is recorded with each run.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from benchmarks.harness import _stats, cpu_info, machine_info, save_case
from netarchitect.search import DEFAULT_TRIALS, design, hypervolume
from netarchitect.search.objectives import pareto_front
from netarchitect.search.pruning import ParetoStopRule, Reference, fully_trained, is_stopped
from netarchitect.search.storage import default_url, open_storage
from netarchitect.search.worker import trained

NAME = "search"
DIRECTIONS = ["maximize", "minimize"]
SEEDS = (0, 1, 2)
SMALL, BUDGET = 5_000, 50_000
Point = tuple[float, float, float, int]  # (seconds since the first start, accuracy, MACs, trial)


def machine() -> dict[str, Any]:
    return machine_info(2)


def load() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------- 1. default run


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished child processes (the workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_design(out: Path, console: Console, **kw: Any) -> tuple[Any, float, dict[str, float]]:
    """``design(**kw)``; returns the result, its wall time, and the load average around it and
    the CPU time it used (CPU s / 2 estimates the wall time on two idle cores)."""
    before, cpu, start = load(), cpu_seconds(), time.perf_counter()
    result = design(out=out, console=console, **kw)
    wall = time.perf_counter() - start
    return result, wall, {"load_before": before, "load_after": load(), "cpu_s": cpu_seconds() - cpu}


def counts(study: Any) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "trained": sum(trained(t) for t in trials),
        "fully_trained": sum(fully_trained(t) for t in trials),
        "stopped_early": sum(is_stopped(t) for t in trials),
        "reused": sum("reused_from" in t.user_attrs for t in trials),
        "rejected": sum("rejected" in t.user_attrs for t in trials),
    }


def default_run(out: Path, seed: int, trials: int, console: Console) -> dict[str, Any]:
    """The embedded default run for ``seed``; what its chosen models reach on the test split."""
    result, wall, loads = run_design(out / f"default_{seed}", console, seed=seed, trials=trials)
    within = [f["test_acc"] for f in result.final if f["params"] <= BUDGET]
    small = [f["test_acc"] for f in result.final if f["params"] <= SMALL]
    best, best_small = max(within, default=0.0), max(small, default=0.0)
    return {
        "seed": seed,
        "wall_s": wall,
        **loads,
        **counts(result.study),
        "front": result.final,
        "best_test_acc_50k": best,
        "best_test_acc_5k": best_small,
        "targets": {
            "wall_s <= 300": wall <= 300,
            "test_acc >= 98.5% within 50k params": best >= 0.985,
            "test_acc >= 97% within 5k params": best_small >= 0.97,
        },
    }


# ---------------------------------------------------------------------------- hypervolume


def _curve(study: Any) -> tuple[float, list[Point]]:
    """(wall time, [(seconds since the first start, accuracy, MACs, number) per fully trained
    trial, in completion order])."""
    trials = [t for t in study.get_trials() if t.datetime_start is not None]
    t0 = min(t.datetime_start for t in trials)
    done = [t for t in trials if t.datetime_complete is not None]
    end = max(t.datetime_complete for t in done)
    points = sorted(
        ((t.datetime_complete - t0).total_seconds(), t.values[0], t.values[1], t.number)
        for t in done
        if fully_trained(t)
    )
    return (end - t0).total_seconds(), points


def _hv(points: Sequence[Point], ref: list[float], scale: Callable[[float], float]) -> float:
    return hypervolume([(p[1], scale(p[2])) for p in points], DIRECTIONS, ref)


def _hv_at(points: Sequence[Point], t: float, ref: list[float], scale: Callable) -> float:
    return _hv([p for p in points if p[0] <= t], ref, scale)


def _time_to_reach(points: Sequence[Point], target: float, ref: list[float], scale: Callable):
    for i, p in enumerate(points):
        if _hv(points[: i + 1], ref, scale) >= target:
            return p[0]
    return math.inf


# ---------------------------------------------------------------------------- 2. early stopping


def replay_rule(study: Any) -> dict[str, Any]:
    """Replay the early-stopping rule on a run without it: which trials would it have stopped,
    and how many of those ended on the run's Pareto front?"""
    done = [t for t in study.get_trials(deepcopy=False) if fully_trained(t)]
    front = {done[i].number for i in pareto_front([t.values for t in done], DIRECTIONS)}
    stopped, false_stops, saved, total = [], [], 0, 0
    for t in done:
        refs = [
            Reference(tuple(r.user_attrs["curve"]), (r.values[1],), r.user_attrs["train"]["epochs"])
            for r in done
            if r.datetime_complete <= t.datetime_start
        ]
        epochs = t.user_attrs["train"]["epochs"]
        rule = ParetoStopRule(refs, (t.values[1],), epochs=epochs)
        curve = t.user_attrs["curve"]
        total += len(curve)
        for epoch, acc in enumerate(curve):
            if rule(epoch, acc):
                stopped.append(t.number)
                saved += len(curve) - epoch - 1
                if t.number in front:
                    false_stops.append(t.number)
                break
    return {
        "front": sorted(front),
        "stopped": stopped,
        "would_stop": len(stopped),
        "of_trials": len(done),
        "false_stops": false_stops,
        "epochs_saved_fraction": saved / max(1, total),
    }


def concurrent_designs(out: Path, seed: int, trials: int) -> dict[bool, Any]:
    """The default search for ``seed`` with (``True``) and without early stopping, run at the
    same time as two ``netarchitect design --workers 1`` processes, so that both meet the same
    load on a shared machine; returns each run's study."""
    runs = {}
    for prune in (True, False):
        run = out / f"es_{seed}_{'with' if prune else 'without'}"
        argv = [sys.executable, "-m", "netarchitect", "design", "--out", str(run), "--seed"]
        argv += [str(seed), "--trials", str(trials), "--workers", "1"]
        argv += [] if prune else ["--no-prune"]
        with (out / f"{run.name}.log").open("wb") as log:
            runs[prune] = (run, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    studies = {}
    for prune, (run, proc) in runs.items():
        if proc.wait() != 0:
            raise RuntimeError(f"design failed: see {out / run.name}.log")
        storage = open_storage(default_url(run / "digits"), heartbeat_interval=None, create=False)
        studies[prune] = optuna.load_study(study_name="digits", storage=storage)
    return studies


def early_stopping_pair(out: Path, seed: int, trials: int, console: Console) -> dict[str, Any]:
    """The default search for ``seed`` with and without early stopping, run concurrently."""
    out.mkdir(parents=True, exist_ok=True)
    before = load()
    studies = concurrent_designs(out, seed, trials)
    record: dict[str, Any] = {
        "seed": seed,
        "workers_each": 1,
        "load_before": before,
        "load_after": load(),
    }
    runs = {}
    for prune, study in studies.items():
        label = "with" if prune else "without"
        runs[prune] = _curve(study)
        record[f"{label}_counts"] = counts(study)
    record["replay"] = replay_rule(studies[False])
    (wall_with, pts_with), (wall_without, pts_without) = runs[True], runs[False]
    worst = 1.1 * max(p[2] for p in (*pts_with, *pts_without))
    ref = [0.9, math.log10(worst)]
    t_equal = min(wall_with, wall_without)
    stopped = set(record["replay"]["stopped"])
    kept = [p for p in pts_without if p[3] not in stopped]
    hv = {
        "with_at_T": _hv_at(pts_with, t_equal, ref, math.log10),
        "without_at_T": _hv_at(pts_without, t_equal, ref, math.log10),
        "with_end": _hv(pts_with, ref, math.log10),
        "without_end": _hv(pts_without, ref, math.log10),
        "without_end_minus_replayed_stops": _hv(kept, ref, math.log10),
    }
    reach = _time_to_reach(pts_with, hv["without_end"], ref, math.log10)
    record.update(
        {
            "wall_with_s": wall_with,
            "wall_without_s": wall_without,
            "equal_time_s": t_equal,
            "hv": hv,
            "ratio_without_over_with_at_T": hv["without_at_T"] / hv["with_at_T"],
            "ratio_with_over_without_at_T": hv["with_at_T"] / max(hv["without_at_T"], 1e-12),
            "ratio_with_over_without_end": hv["with_end"] / max(hv["without_end"], 1e-12),
            "replayed_stops_hv_kept": hv["without_end_minus_replayed_stops"] / hv["without_end"],
            "with_time_to_without_final_hv_s": reach if math.isfinite(reach) else None,
        }
    )
    return record


# ---------------------------------------------------------------------------- 3. NSGA-II vs random


def strategy_pair(out: Path, seed: int, trials: int, console: Console) -> dict[str, Any]:
    """NSGA-II with early stopping and random search without, at equal trained-trial counts."""
    runs = {}
    for label, sampler, prune in (("random", "random", False), ("nsga2_es", "nsga2", True)):
        result, _, _ = run_design(
            out,
            console,
            study=f"{label}_{seed}",
            sampler=sampler,
            prune=prune,
            seed=seed,
            trials=trials,
            workers=0,
        )
        runs[label] = _curve(result.study)
    worst = 1.1 * max(p[2] for _, pts in runs.values() for p in pts)
    random_wall, random_points = runs["random"]
    nsga_wall, nsga_points = runs["nsga2_es"]
    record: dict[str, Any] = {
        "seed": seed,
        "random_wall_s": random_wall,
        "nsga2_es_wall_s": nsga_wall,
    }
    # The target uses MACs as they are; log10(MACs) (costs span three orders of magnitude, where a
    # linear axis makes the hypervolume almost only the best accuracy) is reported beside it.
    for prefix, scale in (("", lambda m: m), ("log_", math.log10)):
        ref = [0.0, scale(worst)]
        hv_random = _hv(random_points, ref, scale)
        reach = _time_to_reach(nsga_points, hv_random, ref, scale)
        record.update(
            {
                f"{prefix}hv_random": hv_random,
                f"{prefix}hv_nsga2_es": _hv(nsga_points, ref, scale),
                f"{prefix}nsga2_es_time_to_random_hv_s": _finite(reach),  # None: never reached
                f"{prefix}ratio": _finite(reach / random_wall),
            }
        )
    return record


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _median(values: Sequence[float | None]) -> float | None:
    """Median over seeds; a seed that never reached its target counts as infinite."""
    return _finite(statistics.median(math.inf if v is None else v for v in values))


# ---------------------------------------------------------------------------- recording


def _record(
    case: str,
    ours: tuple[str, list[float]],
    peer: tuple[str, list[float]] | None,
    ratio: float | None,
    target: float | None,
    extra: dict[str, Any],
) -> None:
    if case.endswith("_quick"):  # smoke runs are not results
        return
    entry = {
        "case": case,
        "ours": _stats(*ours),
        "peer": _stats(*peer) if peer else None,
        "ratio": ratio,
        "target": target,
        "warmup": 0,
        "repeats": len(ours[1]),
        "extra": extra,
        "machine": machine(),
    }
    save_case(NAME, case, entry, Path(__file__).parent / "results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with a few trials")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--pair-trials", type=int, default=30, help="trials per NSGA/random run")
    parser.add_argument("--only", default="default,es,pairs", help="comma-separated cases")
    args = parser.parse_args(argv or [])  # `make bench` calls main() with no arguments
    only = set(args.only.split(","))
    console = Console()
    quick = "_quick" if args.quick else ""
    trials, pair_trials = (4, 4) if args.quick else (DEFAULT_TRIALS, args.pair_trials)
    seeds = list(range(1 if args.quick else args.seeds))
    console.print(f"CPU: {cpu_info()['cpu_model']} ({cpu_info()['cpu_capability']})")
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        if "default" in only:
            runs = [default_run(Path(tmp), s, trials, console) for s in seeds]
            for r in runs:
                console.print({k: v for k, v in r.items() if k != "front"})
            met = all(all(r["targets"].values()) for r in runs)
            extra = {"runs": runs, "trials": trials, "all_targets_met": met}
            _record(
                "default_run" + quick,
                ("design", [r["wall_s"] for r in runs]),
                None,
                None,
                None,
                extra,
            )
            for r in runs:
                console.print(
                    f"seed {r['seed']}: {r['wall_s']:.0f} s (load {r['load_before']:.1f}, "
                    f"{r['cpu_s']:.0f} CPU s), "
                    f"{r['trained']} trained ({r['stopped_early']} stopped early), best test "
                    f"{100 * r['best_test_acc_50k']:.2f}% <= 50k, "
                    f"{100 * r['best_test_acc_5k']:.2f}% <= 5k params"
                )
        if "es" in only:
            pairs = [early_stopping_pair(Path(tmp) / "es", s, trials, console) for s in seeds]
            for p in pairs:
                console.print(p)
            ratio = _median([p["ratio_without_over_with_at_T"] for p in pairs])
            extra = {
                "pairs": pairs,
                "trials_per_run": trials,
                "median_hv_with_over_without_at_T": _median(
                    [p["ratio_with_over_without_at_T"] for p in pairs]
                ),
                "median_hv_with_over_without_end": _median(
                    [p["ratio_with_over_without_end"] for p in pairs]
                ),
                "false_stops": sum(len(p["replay"]["false_stops"]) for p in pairs),
            }
            _record(
                "early_stopping" + quick,
                ("with early stopping", [p["wall_with_s"] for p in pairs]),
                ("without", [p["wall_without_s"] for p in pairs]),
                ratio,
                1.0,
                extra,
            )
            for p in pairs:
                r = p["replay"]
                console.print(
                    f"seed {p['seed']}: at equal wall time {p['equal_time_s']:.0f} s, "
                    f"HV with / without early stopping = {p['ratio_with_over_without_at_T']:.3f} "
                    f"(at the end: {p['ratio_with_over_without_end']:.3f}); replayed rule would "
                    f"stop {r['would_stop']}/{r['of_trials']} trials, "
                    f"{len(r['false_stops'])} of them on the front (HV kept without them all: "
                    f"{p['replayed_stops_hv_kept']:.4f})"
                )
            console.print(f"median HV(without) / HV(with) at equal wall time = {ratio} (<= 1)")
        if "pairs" in only:
            pairs = [strategy_pair(Path(tmp) / "pairs", s, pair_trials, console) for s in seeds]
            for p in pairs:
                console.print(p)
            ratio = _median([p["ratio"] for p in pairs])
            extra = {
                "log_macs_ratio_median": _median([p["log_ratio"] for p in pairs]),
                "pairs": pairs,
                "trials_per_run": pair_trials,
                "met": ratio is not None and ratio <= 0.6,
                "hv_nsga2_es_ge_random": [p["hv_nsga2_es"] >= p["hv_random"] for p in pairs],
            }
            _record(
                "nsga2_es_vs_random" + quick,
                ("netarchitect", [p["nsga2_es_time_to_random_hv_s"] or math.inf for p in pairs]),
                ("random search", [p["random_wall_s"] for p in pairs]),
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

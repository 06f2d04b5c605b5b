"""A seeded spec fuzzer: mutated specs either fail with a library error or build *and* run.

``fuzz_specs(n, seed)`` starts from specs that work — one node around every registered
block's example, and the example specs — and mutates them as a hostile user would: wrong
types, zero/negative/huge sizes, missing or unknown keys, cycles, unknown merges, unicode
and reserved ids, non-finite floats, deep nesting, other dtypes, junk context, ties and
roles. Each case is loaded, validated, built on the CPU (weights capped at
:data:`MAX_WEIGHT_BYTES`), run forward on random inputs of its declared shapes and
dtypes, hashed, and its weights written. The outcome of each case is one of:

- ``rejected``: a :class:`~netarchitect.errors.NetArchitectError` before anything ran;
- ``ran``: built, ran forward, hashed and saved;
- ``skipped``: valid, but its inputs are too large to run here;
- ``crash``: any other exception while loading or building (a bug);
- ``forward_crash``: built, then failed in forward, hashing or saving (a bug);
- ``hang``: took longer than :data:`TIME_LIMIT` seconds (a bug).

``python -m netarchitect.testing.fuzz --cases 10000`` prints the counts (``make fuzz``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import NetArchitectError
from ..registry import block_examples, get_block, list_blocks
from ..spec_checks import value_problem

__all__ = ["MAX_WEIGHT_BYTES", "TIME_LIMIT", "FuzzResult", "fuzz_specs", "run_case", "seed_specs"]

#: Weights a fuzzed network may have (more is refused with a ``BudgetError``).
MAX_WEIGHT_BYTES = 64 * 2**20
#: Input elements a case may feed (larger valid cases are ``skipped``).
MAX_INPUT_NUMEL = 2**20
#: Seconds one case may take.
TIME_LIMIT = 10.0

BAD_FAILURES = ("crash", "forward_crash", "hang")
_RESERVED = ("keys", "values", "items", "update", "pop", "forward", "train", "training", "to",
             "type", "float", "half", "cuda", "parameters", "__class__", "return_nodes", "self")
_WEIRD_STRINGS = ("", " ", "ü", "日本", "a" * 300, "\x00", "../../etc/passwd", "None", "1e400")
_HUGE_INTS = (2**31, 2**40, 2**62, 2**63, 2**64, 10**20, -(2**63) - 1)


@dataclass
class FuzzResult:
    """Outcome counts and the specs of every bad outcome (with their errors)."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.counts[k] for k in BAD_FAILURES)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{sum(self.counts.values())} specs in {self.seconds:.0f} s: {parts}"


def _to_data(value: Any) -> Any:
    if isinstance(value, Tensor):
        return None
    if isinstance(value, tuple | list):
        return [_to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_data(v) for k, v in value.items()}
    return value


def _dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def seed_specs() -> list[dict[str, Any]]:
    """Working specs: one node around each registered block's examples whose inputs are
    tensors and whose constructor arguments are plain data, plus the example specs."""
    specs = []
    for name in list_blocks():
        for ex in block_examples(get_block(name)):
            if ex.forward_kwargs or not ex.inputs or not all(isinstance(x, Tensor) for x in ex.inputs):
                continue
            params = _to_data(dict(ex.kwargs))
            if value_problem(params) or any(
                v is None and ex.kwargs[k] is not None for k, v in params.items()
            ):
                continue  # tensors, partials or classes cannot go in a spec
            inputs = {f"x{i}": {"shape": list(x.shape[1:]), "dtype": _dtype_name(x)}
                      for i, x in enumerate(ex.inputs)}
            if any(not s["shape"] for s in inputs.values()):
                continue
            node: dict[str, Any] = {"id": "n", "block": name, "params": params,
                                    "inputs": list(inputs)}
            if len(inputs) > 1:
                node["merge"] = "args"
            specs.append({"name": f"{name}_{ex.name or 'example'}", "inputs": inputs,
                          "nodes": [node], "outputs": ["n"]})
    examples = Path(__file__).resolve().parents[3] / "examples" / "specs"
    if examples.is_dir():  # a source checkout
        import yaml

        for path in sorted(examples.glob("*.yaml")):
            specs.append(yaml.safe_load(path.read_text()))
    return specs


# --------------------------------------------------------------------------- mutations


def _random_value(rng: random.Random) -> Any:
    return rng.choice([
        0, -1, 1, 2, 3, 7, rng.choice(_HUGE_INTS), 0.5, -0.5, 1e-30, 1e30, math.nan, math.inf,
        -math.inf, True, False, None, rng.choice(_WEIRD_STRINGS), [], [0], [3, 3, 3], [1, -1],
        {}, {"name": "relu"}, {"name": rng.choice(_WEIRD_STRINGS)}, "relu", "layernorm",
        "batchnorm2d", [[[[1]]]],
    ])


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _plausible(value: Any, rng: random.Random) -> Any:
    """A nearby value of the same kind (so more mutants build and run)."""
    from ..registry import layer_table

    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([1, 2, 3, 4, 5, 8, 16, value + 1, max(value - 1, 0), value * 2])
    if isinstance(value, float):
        return rng.choice([0.0, 0.1, 0.5, 0.9, 1.0, 2.0, value * 2])
    if isinstance(value, str):
        kind = next((k for k in ("norm", "act", "mlp") if value in layer_table(k)), None)
        return rng.choice(sorted(layer_table(kind))) if kind else value
    if isinstance(value, list) and value:
        return [_plausible(v, rng) for v in value]
    return value


def _mutate_param(spec: dict[str, Any], rng: random.Random) -> None:
    node = rng.choice(spec["nodes"])
    params = node.setdefault("params", {})
    if not isinstance(params, dict):
        node["params"] = {}
        return
    choice = rng.random()
    if params and choice < 0.3:
        key = rng.choice(list(params))
        params[key] = _plausible(params[key], rng)
    elif params and choice < 0.6:
        key = rng.choice(list(params))
        params[key] = _random_value(rng)
    elif params and choice < 0.75:
        del params[rng.choice(list(params))]
    elif choice < 0.9:
        params[rng.choice(["out_features", "out_channels", "num_heads", "dim", "p", "bogus",
                           "kernel_size", "stride", "groups", "eps"])] = _random_value(rng)
    else:
        params[rng.choice(list(params) or ["x"])] = _nested(rng.choice([10, 70, 600]))


def _mutate_graph(spec: dict[str, Any], rng: random.Random) -> None:
    nodes = spec["nodes"]
    node = rng.choice(nodes)
    choice = rng.randrange(9)
    if choice == 0:
        node["id"] = rng.choice([*_RESERVED, *_WEIRD_STRINGS, nodes[0]["id"], 5, None])
    elif choice == 1:
        node["inputs"] = rng.choice([[node.get("id")], ["nope"], [], "x0", [1], None,
                                     [*node.get("inputs", []), *node.get("inputs", [])]])
    elif choice == 2:
        node["merge"] = rng.choice(["add", "concat", "mul", "gate", "args", "sum", None, 3])
        node["merge_dim"] = rng.choice([0, 1, -1, 5, -9, "0", 1.5])
    elif choice == 3:
        params = node.get("params")
        extra = {**node, "params": dict(params) if isinstance(params, dict) else params}
        extra["id"] = f"{extra.get('id')}_copy"
        extra["inputs"] = [node.get("id"), *(spec.get("inputs") or {})]
        extra["merge"] = rng.choice(["add", "concat", "mul", "gate", "args"])
        nodes.append(extra)
        if rng.random() < 0.3:  # a cycle
            node["inputs"] = [extra["id"]]
    elif choice == 4:
        node["block"] = rng.choice([rng.choice(list_blocks()), "Linear", "nope", "", 3])
        if rng.random() < 0.5:
            node["params"] = {}
    elif choice == 5:
        spec["outputs"] = rng.choice([["nope"], [], "n", None, [node.get("id"), node.get("id")]])
    elif choice == 6:
        node[rng.choice(["bogus", "param", "input"])] = 1
    elif choice == 7:
        del nodes[rng.randrange(len(nodes))]
    else:
        rng.shuffle(nodes)


def _mutate_inputs(spec: dict[str, Any], rng: random.Random) -> None:
    inputs = spec.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        spec["inputs"] = _random_value(rng)
        return
    name = rng.choice(list(inputs))
    body = inputs[name]
    if not isinstance(body, dict):
        return
    choice = rng.randrange(5)
    shape = list(body.get("shape") or [1])
    if choice == 0:
        i = rng.randrange(len(shape))
        shape[i] = rng.choice([0, -2, 1, 2, 3, 1000, 2**31, 2**63, 1.5, "4", None])
        body["shape"] = shape
    elif choice == 1:
        body["shape"] = rng.choice([[], shape + [2], shape[:-1], [2] * 9, "3x4", {"a": 1}])
    elif choice == 2:
        body["dtype"] = rng.choice(["int64", "int32", "bool", "float16", "bfloat16", "float64",
                                    "complex64", "float", None, 3])
    elif choice == 3:
        inputs[rng.choice([*_RESERVED, *_WEIRD_STRINGS, "x9"])] = dict(body)
    else:
        body[rng.choice(["shap", "size"])] = [1]


def _mutate_top(spec: dict[str, Any], rng: random.Random) -> None:
    node = rng.choice(spec["nodes"])
    choice = rng.randrange(7)
    if choice == 0:
        spec["context"] = rng.choice([["attention_mask"], ["x0"], [1], "m", [None], ["self"]])
    elif choice == 1:
        node["context"] = rng.choice([["attention_mask"], {"mask": "m"}, 3, ["kv_cache"]])
        spec.setdefault("context", ["attention_mask", "kv_cache", "m"])
    elif choice == 2:
        nid = node.get("id")
        spec["tie"] = rng.choice([{f"{nid}.weight": f"{nid}.bias"}, {f"{nid}.weight": "zz.w"},
                                  {str(nid): str(nid)}, [1], {f"{nid}..x": "a"}])
    elif choice == 3:
        spec["roles"] = rng.choice([{"kind": "classifier", "features": node.get("id")},
                                    {"kind": "causal_lm"}, {"kind": "nope"}, ["x"], {"kind": 3}])
    elif choice == 4:
        spec["init"] = [rng.choice([
            {"init": "normal", "args": {"std": rng.choice([-1.0, math.nan, 0.02])}},
            {"init": "uniform", "args": {"a": 2, "b": 1}},
            {"init": "constant", "args": {"value": rng.choice([1e39, 2**70, 0.5])}},
            {"init": "kaiming_normal", "params": ["bias"]},
            {"init": "orthogonal", "modules": ["Linear"]},
            {"init": rng.choice(["bogus", 3, None])},
            {"init": "zeros", "args": [1]},
        ])]
    elif choice == 5:
        spec[rng.choice(["bogus", "Nodes", "input"])] = 1
    else:
        spec["name"] = rng.choice([*_WEIRD_STRINGS, 3, None, ["a"]])


_MUTATIONS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    _mutate_param, _mutate_param, _mutate_param, _mutate_graph, _mutate_graph, _mutate_inputs,
    _mutate_top,
)


def mutate(spec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of ``spec`` with one to three random mutations."""
    spec = copy.deepcopy(spec)
    for _ in range(rng.choice([1, 1, 2, 3])):
        if not isinstance(spec.get("nodes"), list) or not spec["nodes"] or not all(
            isinstance(n, dict) for n in spec["nodes"]
        ):
            break
        with contextlib.suppress(Exception):  # a mutation of an already broken spec
            rng.choice(_MUTATIONS)(spec, rng)
    return spec


# --------------------------------------------------------------------------- running


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_Timeout` after ``seconds`` (main thread on POSIX; else no limit)."""
    try:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
    except (ValueError, AttributeError):  # pragma: no cover - not the main thread / not POSIX
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _Timeout


def run_case(spec: Any, workdir: Path) -> tuple[str, str]:
    """The outcome of one spec and, for bad outcomes, the error."""
    from ..network import build, sample_inputs
    from ..spec import load_spec, spec_hash
    from ..weights import save_weights

    stage = "build"
    try:
        with _time_limit(TIME_LIMIT):
            try:
                loaded = load_spec(spec)
                model = build(loaded, seed=0, max_bytes=MAX_WEIGHT_BYTES)
            except NetArchitectError:
                return "rejected", ""
            stage = "forward"
            numel = sum(math.prod((2, *i.shape)) for i in loaded.inputs)
            if numel > MAX_INPUT_NUMEL:
                return "skipped", ""
            if hasattr(model, "sample_inputs"):  # a GNN: a small graph comes with its inputs
                inputs = model.sample_inputs(num_nodes=2)
            else:
                inputs = sample_inputs(loaded, batch=2, int_high=1)
            with torch.no_grad():
                model.eval()(*inputs)
            spec_hash(model.spec)
            save_weights(model, workdir / "w.safetensors")
            return "ran", ""
    except _Timeout:
        return "hang", f"{stage}: over {TIME_LIMIT:.0f} s"
    except Exception as exc:  # noqa: BLE001 - every other exception is the finding
        kind = "crash" if stage == "build" else "forward_crash"
        return kind, f"{stage}: {type(exc).__name__}: {str(exc).strip()[:300]}"


def fuzz_specs(
    cases: int, seed: int = 0, *, progress: Callable[[int], None] | None = None
) -> FuzzResult:
    """Run ``cases`` mutated specs (seeded) and count their outcomes."""
    rng = random.Random(seed)
    seeds = seed_specs()
    result = FuzzResult()
    start = time.perf_counter()
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="netarchitect-fuzz-") as tmp:
        for i in range(cases):
            spec = mutate(rng.choice(seeds), rng)
            outcome, error = run_case(spec, Path(tmp))
            result.counts[outcome] += 1
            if outcome in BAD_FAILURES:
                result.failures.append((outcome, spec, error))
            if progress is not None:
                progress(i + 1)
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m netarchitect.testing.fuzz``: print the outcome counts; exit 1 on a bad one."""
    from rich.progress import Progress

    parser = argparse.ArgumentParser(prog="python -m netarchitect.testing.fuzz")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with Progress(transient=True) as bar:
        task = bar.add_task("fuzzing specs", total=args.cases)
        result = fuzz_specs(args.cases, args.seed, progress=lambda n: bar.update(task, completed=n))
    print(result.summary())
    for outcome, spec, error in result.failures[:20]:
        print(f"{outcome}: {error}\n  spec: {str(spec)[:400]}")
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""benchmarks.harness: alternating timing, statistics, atomic JSON results, README table."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.harness import compare, fmt_seconds, load_results, render_markdown_table, time_one


class FakeClock:
    """A clock that only moves when a benchmarked callable says how long it 'took'."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def task(self, label: str, durations):
        durations = iter(durations)

        def run() -> None:
            self.calls.append(label)
            self.now += next(durations)

        return run


def test_compare_alternates_and_computes_ratio(tmp_path, capsys):
    clock = FakeClock()
    ours = clock.task("o", [9, 9] + [1, 2, 3, 4, 5])
    peer = clock.task("p", [9, 9] + [2, 4, 6, 8, 10])
    before = torch.get_num_threads()
    entry = compare(
        "linear",
        ours,
        peer,
        case="b=8",
        warmup=2,
        repeats=5,
        threads=1,
        results_dir=tmp_path,
        clock=clock,
        label_peer="torch",
        target=1.1,
        extra={"b": 8},
    )
    assert clock.calls == ["o", "p"] * 7
    assert torch.get_num_threads() == before
    assert entry["ours"]["median_s"] == 3 and entry["peer"]["median_s"] == 6
    assert entry["ours"]["iqr_s"] == 2 and entry["ours"]["min_s"] == 1
    assert entry["ratio"] == 0.5 and entry["target"] == 1.1 and entry["extra"] == {"b": 8}
    assert entry["peer"]["label"] == "torch" and entry["machine"]["threads"] == 1
    assert "linear" in capsys.readouterr().out
    saved = json.loads((tmp_path / "linear.json").read_text())
    assert saved["cases"]["b=8"] == entry


def test_results_merge_by_case_and_leave_no_temp_files(tmp_path):
    fast = {"warmup": 0, "repeats": 1, "results_dir": tmp_path, "console": None}
    compare("bench", lambda: None, lambda: None, case="a", **fast)
    compare("bench", lambda: None, lambda: None, case="b", **fast)
    compare("bench", lambda: None, lambda: None, case="a", extra={"again": True}, **fast)
    data = load_results(tmp_path)["bench"]
    assert sorted(data["cases"]) == ["a", "b"]
    assert data["cases"]["a"]["extra"] == {"again": True}
    assert data["cases"]["a"]["ours"]["iqr_s"] == 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_time_one_records_rss_without_peer(tmp_path):
    clock = FakeClock()
    entry = time_one(
        "analysis",
        clock.task("o", [0.5] * 4),
        case="resnet",
        warmup=1,
        repeats=3,
        results_dir=tmp_path,
        clock=clock,
    )
    assert entry["ours"]["median_s"] == 0.5 and entry["peer"] is None and entry["ratio"] is None
    assert entry["rss_peak_mib"] > 0


def test_render_markdown_table(tmp_path):
    assert render_markdown_table(tmp_path / "missing").splitlines() == [
        "| benchmark | case | ours median | peer median | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    clock = FakeClock()
    compare(
        "linear",
        clock.task("o", [1e-3] * 2),
        clock.task("p", [2e-3] * 2),
        case="big",
        warmup=1,
        repeats=1,
        results_dir=tmp_path,
        clock=clock,
        target=1.1,
    )
    time_one(
        "summary",
        clock.task("o", [2.5e-6] * 2),
        warmup=1,
        repeats=1,
        results_dir=tmp_path,
        clock=clock,
    )
    lines = render_markdown_table(tmp_path).splitlines()
    assert lines[0] == "| benchmark | case | ours median | peer median | ratio | target |"
    assert lines[2] == "| linear | big | 1.00 ms | 2.00 ms | 0.50× | ≤ 1.10× |"
    assert lines[3] == "| summary | default | 2.50 µs | — | — | — |"


def test_bad_arguments_and_corrupt_results(tmp_path):
    with pytest.raises(ValueError, match="repeats"):
        time_one("x", lambda: None, repeats=0, results_dir=tmp_path)
    with pytest.raises(ValueError, match="warmup"):
        time_one("x", lambda: None, warmup=-1, results_dir=tmp_path)
    with pytest.raises(ValueError, match="threads"):
        compare("x", lambda: None, lambda: None, threads=0, results_dir=tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        time_one("bad", lambda: None, warmup=0, repeats=1, results_dir=tmp_path)


def test_zero_peer_time_gives_no_ratio(tmp_path):
    clock = FakeClock()
    entry = compare(
        "z",
        clock.task("o", [1.0] * 2),
        clock.task("p", [0.0] * 2),
        warmup=0,
        repeats=2,
        results_dir=tmp_path,
        clock=clock,
    )
    assert entry["ratio"] is None


def test_fmt_seconds():
    assert [fmt_seconds(t) for t in (2.0, 0.0123, 4.5e-5, 3e-9)] == [
        "2.00 s",
        "12.30 ms",
        "45.00 µs",
        "3 ns",
    ]


def test_time_parser_ignores_sys_argv_when_called_without_arguments(monkeypatch):
    from benchmarks.harness import parse_args, time_parser

    monkeypatch.setattr("sys.argv", ["pytest", "-n", "2", "--cov=x"])
    parser = time_parser("Title line\nmore", warmup=1, repeats=4)
    args = parse_args(parser, None)
    assert (args.warmup, args.repeats, args.threads) == (1, 4, 2)
    assert parse_args(parser, ["--repeats", "9"]).repeats == 9
    assert parser.description == "Title line"

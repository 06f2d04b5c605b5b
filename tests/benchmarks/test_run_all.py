import json

from benchmarks.run_all import END, START, update_readme


def test_update_readme_replaces_only_the_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    results = tmp_path / "results"
    results.mkdir()
    entry = {"ours": {"median_s": 0.5}, "peer": {"median_s": 1.0}, "ratio": 0.5, "target": 1.0}
    (results / "demo.json").write_text(json.dumps({"cases": {"case_a": entry}}))
    update_readme(readme, results)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert "old" not in text and "| demo | case_a |" in text and "0.50×" in text

"""The report's "why these models" section: fANOVA importances and neighbour trade-offs."""

from __future__ import annotations

import random

import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from netarchitect.search.decisions import MIN_TRIALS, decision_records, parameter_importances
from netarchitect.search.final import front_trials
from netarchitect.search.objectives import parse_objectives
from netarchitect.search.scoring import get_scoring

DISTRIBUTIONS = {
    "width": IntDistribution(4, 64),
    "act": CategoricalDistribution(["relu", "tanh"]),
    "train.lr": FloatDistribution(1e-3, 1e-1, log=True),
}


def _trials(n: int, seed: int = 0):
    """Accuracy driven by width (and nothing else), MACs = 100 x width."""
    rng = random.Random(seed)
    out = []
    for number in range(n):
        params = {"width": rng.randint(4, 64), "act": rng.choice(["relu", "tanh"]),
                  "train.lr": 10 ** rng.uniform(-3, -1)}
        accuracy = 0.5 + params["width"] / 200 + rng.uniform(-1e-3, 1e-3)
        trial = create_trial(params=params, distributions=DISTRIBUTIONS,
                             values=[accuracy, 100.0 * params["width"]], state=TrialState.COMPLETE)
        trial.number = number
        out.append(trial)
    return out


OBJECTIVES = parse_objectives("accuracy,macs")
SCORING = get_scoring("classification")


def test_importances_find_the_dimension_that_drives_the_objectives():
    imp = parameter_importances(_trials(24), OBJECTIVES, seed=0)
    assert set(imp) == {"accuracy", "macs"}
    for name in ("accuracy", "macs"):
        assert max(imp[name], key=imp[name].get) == "width"
        assert imp[name]["width"] > 0.8
        assert sum(imp[name].values()) == pytest.approx(1.0)
    assert parameter_importances(_trials(24), OBJECTIVES, seed=0) == imp  # seeded


def test_too_few_trials_or_constant_objective_give_no_importances():
    assert parameter_importances(_trials(MIN_TRIALS - 1), OBJECTIVES) == {}
    flat = _trials(8)
    for t in flat:
        t.values = [0.9, t.values[1]]
    assert set(parameter_importances(flat, OBJECTIVES)) == {"macs"}
    lines = decision_records(_trials(2), front_trials(_trials(2), OBJECTIVES), OBJECTIVES,
                             SCORING)
    assert any("Too few fully trained trials" in line for line in lines)


def test_records_compare_each_front_model_with_its_neighbours():
    trials = _trials(24)
    front = front_trials(trials, OBJECTIVES)
    assert len(front) >= 3
    text = "\n".join(decision_records(trials, front, OBJECTIVES, SCORING))
    assert "## Why these models" in text and "| `width` |" in text
    for trial in front:
        assert f"### Trial {trial.number}: " in text
    cheap, next_one = front[0], front[1]
    ratio = next_one.values[1] / cheap.values[1]
    assert f"Against trial {cheap.number} (the next cheaper model on the front): " in text
    assert f"({ratio:.2f}×)" in text
    assert f"`width` ({next_one.params['width']} vs {cheap.params['width']})" in text
    assert "(the next costlier model on the front)" in text


def test_a_single_model_front_says_so():
    trials = _trials(6)
    best = max(trials, key=lambda t: t.values[0])
    objectives = parse_objectives("accuracy")
    for t in trials:
        t.values = [t.values[0]]
    text = "\n".join(decision_records(trials, [best], objectives, SCORING))
    assert "The only model on the front" in text


def test_interpretable_models_explain_themselves_under_their_trial():
    trials = _trials(8)
    front = front_trials(trials, OBJECTIVES)
    final = {str(front[0].number): {"interpretability": "### Prototypes\n\n![p](x/p.png)\n"}}
    text = "\n".join(decision_records(trials, front, OBJECTIVES, SCORING, final=final))
    head = f"### Trial {front[0].number}: "
    assert text.index(head) < text.index("#### Prototypes") and "![p](x/p.png)" in text


def test_final_models_with_prototypes_get_a_section(tmp_path):
    import netarchitect as na
    from netarchitect.interpret.specs import protopnet_spec
    from netarchitect.search.final import _interpretability
    from netarchitect.search.tasks import get_task

    task = get_task("digits")
    out = tmp_path / "models" / "trial_00003"
    out.mkdir(parents=True)
    proto = na.build(protopnet_spec((1, 8, 8), 10, widths=(4,), prototypes_per_class=1,
                                    prototype_dim=4), seed=0)
    entry = _interpretability(proto, task, out, tmp_path)
    assert "![prototypes](models/trial_00003/prototypes.png)" in entry["interpretability"]
    assert (out / "prototypes.png").read_bytes()[:4] == b"\x89PNG"
    assert _interpretability(torch.nn.Linear(64, 10), task, out, tmp_path) == {}

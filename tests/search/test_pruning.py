"""Early stopping: the documented multi-objective Pareto rule on constructed curves, and the
single-objective Optuna pruner."""

from __future__ import annotations

import optuna

from netarchitect.search import ParetoStopRule, parse_objectives
from netarchitect.search.pruning import Reference, make_pruner, make_stopper, references

# Four completed trials (accuracy per epoch, cost = MACs): a strong cheap one and three others.
REFS = [
    Reference((0.50, 0.80, 0.90, 0.95, 0.96), (1_000.0,)),
    Reference((0.40, 0.60, 0.70, 0.75), (5_000.0,)),
    Reference((0.30, 0.50, 0.60, 0.70, 0.80), (20_000.0,)),
    Reference((0.20, 0.30), (50_000.0,)),
]


def run(rule, curve):
    """Epoch at which ``rule`` stops ``curve`` (None if it never does)."""
    for epoch, acc in enumerate(curve):
        if rule(epoch, acc):
            return epoch
    return None


def test_reference_best_so_far():
    r = Reference((0.5, 0.4, 0.7), (1.0,))
    assert [r.best_at(t) for t in range(5)] == [0.5, 0.5, 0.7, 0.7, 0.7]  # final best after its end
    assert Reference((), (1.0,)).best_at(0) == float("-inf")


def test_a_dominated_trial_stops_after_warmup_and_patience():
    # Costs 10k MACs (more than the 1k trial) and always less accurate than it at the same epoch.
    curve = [0.30, 0.50, 0.60, 0.65, 0.70, 0.72]
    assert run(ParetoStopRule(REFS, (10_000.0,)), curve) == 3  # dominated at epochs 2 and 3
    assert run(ParetoStopRule(REFS, (10_000.0,), warmup_steps=5), curve) == 5
    assert run(ParetoStopRule(REFS, (10_000.0,), patience=1), curve) == 2


def test_the_warm_up_grows_with_the_planned_epochs():
    curve = [0.30, 0.50, 0.60, 0.65, 0.70, 0.72, 0.73, 0.74, 0.75, 0.76]
    assert run(ParetoStopRule(REFS, (10_000.0,), epochs=7), curve) == 3  # 40% of 7 epochs <= 3
    assert run(ParetoStopRule(REFS, (10_000.0,), epochs=10), curve) == 4  # from the 4th epoch
    assert run(ParetoStopRule(REFS, (10_000.0,), epochs=20), curve) == 8  # from the 8th epoch


def test_trials_on_the_front_at_each_epoch_run_to_the_end():
    cheapest = [0.10, 0.20, 0.30, 0.40, 0.50]  # worst accuracy, but nothing is cheaper
    assert run(ParetoStopRule(REFS, (500.0,)), cheapest) is None
    leader = [0.60, 0.85, 0.92, 0.97, 0.98]  # more expensive but more accurate at every epoch
    assert run(ParetoStopRule(REFS, (10_000.0,)), leader) is None


def test_one_good_epoch_resets_the_patience():
    # Dominated at epoch 2; at epoch 3 its best (0.96) beats the cheap trial's 0.95, which
    # catches up (0.96) at epoch 4: dominated again at 4 and 5 -> stopped at 5, not at 3 or 4.
    curve = [0.1, 0.2, 0.5, 0.96, 0.96, 0.96, 0.96]
    assert run(ParetoStopRule(REFS, (10_000.0,)), curve) == 5


def test_equal_points_do_not_dominate_and_too_few_references_never_stop():
    rule = ParetoStopRule([Reference((0.5, 0.5, 0.5, 0.5), (1_000.0,))] * 4, (1_000.0,))
    assert run(rule, [0.5] * 6) is None
    assert run(ParetoStopRule(REFS[:3], (99_999.0,)), [0.0] * 6) is None  # min_trials = 4


def test_references_read_completed_trials_with_curves():
    objs = parse_objectives("accuracy,macs")
    study = optuna.create_study(directions=["maximize", "minimize"])
    for curve, macs in (([0.5, 0.6], 100.0), (None, 50.0)):
        t = study.ask()
        if curve:
            t.set_user_attr("curve", curve)
        study.tell(t, [0.6, macs])
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    assert references(study, objs) == [Reference((0.5, 0.6), (100.0,))]
    t = study.ask()
    rule = make_stopper(t, objs, {"params": 1, "macs": 200.0, "latency": None}, True, epochs=20)
    assert isinstance(rule, ParetoStopRule) and rule.costs == (200.0,) and len(rule.refs) == 1
    assert rule.warmup_steps == 8
    assert make_stopper(t, objs, {}, False) is None


def test_single_objective_uses_the_optuna_pruner():
    objs = parse_objectives("accuracy")
    study = optuna.create_study(direction="maximize", pruner=make_pruner(True))
    for _ in range(6):  # start-up trials with good curves
        t = study.ask()
        stop = make_stopper(t, objs, {}, True)
        assert not any(stop(e, 0.5 + 0.1 * e) for e in range(5))
        study.tell(t, 0.9)
    t = study.ask()
    stop = make_stopper(t, objs, {}, True)
    assert [stop(e, 0.1) for e in range(5)] == [
        False,
        False,
        False,
        True,
        True,
    ]  # after 3 warm-up steps
    assert isinstance(make_pruner(False), optuna.pruners.NopPruner)

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
    # Plain dominance (margin 0): dominated at epoch 2; at epoch 3 its best (0.96) beats the cheap
    # trial's 0.95, which catches up (0.96) at epoch 4: dominated again at 4 and 5 -> stopped at 5.
    curve = [0.1, 0.2, 0.5, 0.96, 0.96, 0.96, 0.96]
    assert run(ParetoStopRule(REFS, (10_000.0,), margin=0), curve) == 5


def test_the_margin_keeps_ties_and_small_leads_running():
    # The same curve with the default margin (0.0075): a tie with a cheaper trial is not enough.
    curve = [0.1, 0.2, 0.5, 0.96, 0.96, 0.96, 0.96]
    assert run(ParetoStopRule(REFS, (10_000.0,)), curve) is None
    sample = 1 / 360  # one sample of digits' validation split
    cheap = [Reference((0.9, 0.99, 0.99, 0.99), (1_000.0,))] * 4
    for behind, stopped_at in ((1, None), (2, None), (3, 2)):
        curve = [0.9, 0.99 - behind * sample, 0.99 - behind * sample, 0.9]
        assert run(ParetoStopRule(cheap, (5_000.0,), warmup_steps=1), curve) == stopped_at
    assert run(ParetoStopRule(cheap, (5_000.0,), warmup_steps=1, margin=0), curve) == 1  # tie at 0


def test_trials_are_compared_at_the_same_point_of_their_schedules():
    r = Reference((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), (1.0,), epochs=10)
    assert [r.aligned(s, 5) for s in range(5)] == [1, 3, 5, 7, 9]  # half as many planned
    assert [r.aligned(s, 20) for s in (0, 1, 2, 19)] == [0, 0, 1, 9]
    assert r.aligned(3, 10) == r.aligned(3, None) == Reference((), (1.0,)).aligned(3, 7) == 3
    # A 5-epoch trial reaching 0.5 at its 3rd epoch is behind the reference's 0.6 at the same
    # point of the schedule (epoch 6 of 10), not ahead of its 0.3 at epoch 3.
    refs = [r] * 4
    short = [0.2, 0.4, 0.5, 0.55, 0.6]
    assert run(ParetoStopRule(refs, (2.0,), epochs=5, warmup_steps=1), short) == 3  # patience 2
    assert run(ParetoStopRule(refs, (2.0,), warmup_steps=1), short) is None  # same-epoch view


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
    assert rule.refs[0].epochs is None and rule.epochs == 20
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

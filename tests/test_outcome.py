"""What became of a trial (storage/_outcome.py): every kind of trial a study holds, and what
the budget, `study show`, reports and export read from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autotune.cli import main
from autotune.storage import (
    counts_toward_budget,
    is_feasible,
    is_rerun,
    never_ran,
    read_record,
    searched,
    spent_budget,
    stopped,
    succeeded,
    train_time_saved_s,
    train_time_spent_s,
    tried,
    under_way,
)

PREDICATES = (
    succeeded,
    stopped,
    is_rerun,
    searched,
    is_feasible,
    tried,
    under_way,
    spent_budget,
    never_ran,
    counts_toward_budget,
)

PARAMS = {"lora_r": 8, "learning_rate": 1e-4}
DISTRIBUTIONS = {"lora_r": IntDistribution(4, 64, log=True), "learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}
WITHIN = {"config_failed": 0.0, "peak_mem_gb <= 20": -18.5}  # as a worker sets them on a trial that trained


def _trial(
    state: TrialState,
    values: list[float] | None = None,
    constraints: dict[str, float] | None = None,
    **user_attrs: Any,
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        values=values,
        params=PARAMS,
        distributions=DISTRIBUTIONS,
        user_attrs=user_attrs,
        constraints=constraints,
    )


def _failed(kind: str | None) -> optuna.trial.FrozenTrial:
    attrs = {"failure_kind": kind, "failure_reason": f"{kind}: ..."} if kind else {}
    return _trial(TrialState.FAIL, **attrs)


def success() -> optuna.trial.FrozenTrial:
    return _trial(TrialState.COMPLETE, [2.1, 30.0], WITHIN, metrics={"eval_loss": 2.1, "train_time_s": 30.0})


def config_failed_told_infeasible() -> optuna.trial.FrozenTrial:
    """Told COMPLETE with the worst values seen, so that the sampler avoids the region."""
    failed = {"config_failed": 1.0, "peak_mem_gb <= 20": 1.0}
    reason = "CUDA out of memory"
    return _trial(TrialState.COMPLETE, [2.9, 80.0], failed, failure_kind="config", failure_reason=reason)


def config_failed_before_any_success() -> optuna.trial.FrozenTrial:
    return _failed("config")


def interrupted() -> optuna.trial.FrozenTrial:
    return _failed("interrupted")


def surplus() -> optuna.trial.FrozenTrial:
    return _failed("surplus")


def duplicate() -> optuna.trial.FrozenTrial:
    return _failed("duplicate")


def abandoned() -> optuna.trial.FrozenTrial:
    return _failed("abandoned")


def lost_worker() -> optuna.trial.FrozenTrial:
    """Failed by another worker's stale-trial check: its config is queued again."""
    return _failed(None)


def stopped_early() -> optuna.trial.FrozenTrial:
    """Stopped at step 20 of 60: its metrics' train_time_s is extrapolated to the whole run."""
    return _trial(
        TrialState.PRUNED,
        None,
        WITHIN,
        stopped_at_step=20,
        stopped_values=[2.6, 30.0],
        rung_train_time_s=10.0,
        metrics={"eval_loss": 2.6, "train_time_s": 30.0},
    )


def verification_rerun() -> optuna.trial.FrozenTrial:
    metrics = {"eval_loss": 2.15, "train_time_s": 31.0}
    return _trial(TrialState.COMPLETE, [2.15, 31.0], WITHIN, verifies=3, seed=7, metrics=metrics)


def running() -> optuna.trial.FrozenTrial:
    return _trial(TrialState.RUNNING)


def waiting() -> optuna.trial.FrozenTrial:
    return _trial(TrialState.WAITING)


def queued_rerun() -> optuna.trial.FrozenTrial:
    """As `autotune verify` enqueues one."""
    return _trial(TrialState.WAITING, verifies=3, seed=7)


def success_over_a_constraint() -> optuna.trial.FrozenTrial:
    over = {"config_failed": 0.0, "peak_mem_gb <= 20": 4.0}
    return _trial(TrialState.COMPLETE, [1.9, 40.0], over, metrics={"eval_loss": 1.9, "train_time_s": 40.0})


T, F = True, False

# fmt: off
#                                            succeeded
#                                            |  stopped
#                                            |  |  is_rerun
#                                            |  |  |  searched
#                                            |  |  |  |  is_feasible
#                                            |  |  |  |  |  tried
#                                            |  |  |  |  |  |  under_way
#                                            |  |  |  |  |  |  |  spent_budget
#                                            |  |  |  |  |  |  |  |  never_ran
#                                            |  |  |  |  |  |  |  |  |  counts_toward_budget
KINDS = {
    success:                                (T, F, F, T, T, T, T, T, F, T),
    config_failed_told_infeasible:          (F, F, F, F, F, T, T, T, F, T),
    config_failed_before_any_success:       (F, F, F, F, F, T, T, T, F, T),
    interrupted:                            (F, F, F, F, F, F, F, F, F, F),
    surplus:                                (F, F, F, F, F, F, F, F, T, F),
    duplicate:                              (F, F, F, F, F, F, F, F, T, F),
    abandoned:                              (F, F, F, F, F, F, F, F, T, F),
    lost_worker:                            (F, F, F, F, F, F, F, F, F, F),
    stopped_early:                          (F, T, F, F, F, T, T, T, F, T),
    verification_rerun:                     (T, F, T, F, F, T, T, F, F, F),
    running:                                (F, F, F, F, F, F, T, F, F, T),
    waiting:                                (F, F, F, F, F, F, T, F, F, T),
    queued_rerun:                           (F, F, T, F, F, F, T, F, F, F),
    success_over_a_constraint:              (T, F, F, T, F, T, T, T, F, T),
}
# fmt: on


@pytest.mark.parametrize(("kind", "expected"), KINDS.items(), ids=[k.__name__ for k in KINDS])
def test_what_each_kind_of_trial_is(kind, expected):
    """A config failure is tried (never proposed again, and it uses the budget) but is no
    point of the search; an interrupted, surplus, duplicate, abandoned or lost trial is not
    tried, so its config may run again and the budget is not spent on it; a stopped trial
    used the budget without succeeding; a re-run is measured but is no point of the search
    and spends no budget; a running or queued trial of the search counts toward the budget,
    so that workers stop asking; a success over a constraint is on no feasible front."""
    trial = kind()
    names = [p.__name__ for p in PREDICATES]
    assert {p.__name__: p(trial) for p in PREDICATES} == dict(zip(names, expected, strict=True))


@pytest.mark.parametrize(
    ("kind", "spent", "saved"),
    [
        (success, 30.0, 0.0),
        (stopped_early, 10.0, 20.0),
        (verification_rerun, 31.0, 0.0),
        (success_over_a_constraint, 40.0, 0.0),
        (config_failed_told_infeasible, 0.0, 0.0),
        (config_failed_before_any_success, 0.0, 0.0),
        (interrupted, 0.0, 0.0),
        (lost_worker, 0.0, 0.0),
        (running, 0.0, 0.0),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_training_time_spent_and_saved(kind, spent, saved):
    """A stopped trial paid for its training to the rung it stopped at, and saved the rest
    of its whole (extrapolated) run; a trial that did not train paid nothing."""
    trial = kind()
    assert (train_time_spent_s(trial), train_time_saved_s(trial)) == (spent, saved)


def test_a_stopped_trial_never_saves_negative_time():
    """The run extrapolated from the rung may be shorter than the rung took (a slow start)."""
    attrs = {"stopped_values": [2.6, 30.0], "rung_train_time_s": 35.0, "metrics": {"train_time_s": 30.0}}
    trial = _trial(TrialState.PRUNED, **attrs)
    assert (train_time_spent_s(trial), train_time_saved_s(trial)) == (35.0, 0.0)


RESULTS = Path(__file__).parent.parent / "benchmarks" / "results"


@pytest.mark.parametrize(
    ("db", "study", "baseline"),
    [("seed_spread_demo_cpu.db", "demo", None), ("gpu_h100_studies.db", "smollm2-gpu", "smollm2-gpu-random")],
)
def test_studies_of_earlier_releases_read(tmp_path, capsys, db, study, baseline):
    """Studies written by earlier releases (the committed CPU seed-spread study with its
    verification re-runs, the H100 study and its random baseline): every trial's record
    reads, and show, export and report work on them."""
    shutil.copy(RESULTS / db, tmp_path / db)
    url = f"sqlite:///{tmp_path / db}"
    for name in filter(None, (study, baseline)):
        for trial in optuna.load_study(study_name=name, storage=url).get_trials():
            assert read_record(trial).model_dump(exclude_none=True) == trial.user_attrs
    assert main(["study", "show", study, "--storage", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pareto"] and all(row["metrics"] for row in shown["pareto"])
    assert main(["export", study, "--storage", url, "--format", "json", "--out", str(tmp_path / "best.json")]) == 0
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported and all(entry["lora_config"]["r"] > 0 for entry in exported)
    report = ["report", study, "--storage", url, "--out", str(tmp_path / "report")]
    assert main(report + (["--baseline", baseline] if baseline else [])) == 0
    assert (tmp_path / "report" / "report.html").exists()

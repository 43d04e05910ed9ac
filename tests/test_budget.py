"""A budget in GPU-hours: the device time the trials of the search took (a test function's
is its delay, so these run in seconds), stopped trials' part included, re-runs not counted."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import autotune
from autotune.cli import main

from conftest import write_spec

SECOND = 1 / 3600  # an hour's share


def _study(tmp_path, url: str, **spec: object) -> None:
    spec = {"trial": {"kind": "zdt1", "delay_s": 0.25}, "sampler": {"name": "random", "seed": 0}, **spec}
    assert main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", url]) == 0


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).get_trials()


def test_a_study_ends_when_its_gpu_hours_are_spent(tmp_path, sqlite_url, capsys):
    _study(tmp_path, sqlite_url, budget={"gpu_hours": 1 * SECOND})
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    trials = _trials(sqlite_url)
    # 0.25 s of device time each: the fourth spends the second, and nothing is asked after it.
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.user_attrs["device_time_s"] for t in trials] == [0.25] * 4
    assert "budget reached" in capsys.readouterr().out
    assert main(["study", "show", "s", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert (
        "budget 0.000277778 GPU-hours" in out and "device time: 0.0002778 GPU-hours spent of 0.000277778, 0 left" in out
    )
    # Spent: another worker does nothing.
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert len(_trials(sqlite_url)) == 4


def test_the_first_limit_reached_ends_the_study(tmp_path, sqlite_url):
    _study(tmp_path, sqlite_url, budget={"n_trials": 2, "gpu_hours": 1 * SECOND})
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert len(_trials(sqlite_url)) == 2
    summary = autotune.show_study("s", sqlite_url)
    assert summary.device_hours == pytest.approx(0.5 * SECOND)
    assert summary.to_dict()["budget"] == {"n_trials": 2, "gpu_hours": SECOND}


def test_stopped_trials_count_their_part_and_reruns_count_nothing(tmp_path, sqlite_url, capsys):
    _study(
        tmp_path,
        sqlite_url,
        trial={"kind": "zdt1", "delay_s": 0.3},
        budget={"gpu_hours": 10 * SECOND},  # 33 whole trials: a rung needs some completed first
        training={"max_steps": 9},
        early_stopping={"min_steps": 1, "reduction_factor": 3},
    )
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    trials = _trials(sqlite_url)
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert stopped, "a random search has configs beaten at the first rung (once 5 trials have completed)"
    for t in trials:
        steps = t.user_attrs.get("stopped_at_step", 9)
        assert t.user_attrs["device_time_s"] == pytest.approx(0.3 * steps / 9)
    spent = sum(t.user_attrs["device_time_s"] for t in trials)
    assert spent >= 10 and spent - trials[-1].user_attrs["device_time_s"] < 10  # the last trial spent it
    capsys.readouterr()

    # Verification re-runs: their cost is printed when queued; they run, beyond the budget.
    assert main(["verify", "s", "--storage", sqlite_url, "--pick", "trial:0", "--seeds", "2"]) == 0
    assert "about 0.000167 GPU-hours beyond the study's budget" in capsys.readouterr().out
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    reruns = [t for t in _trials(sqlite_url) if "verifies" in t.user_attrs]
    assert [t.state for t in reruns] == [TrialState.COMPLETE] * 2
    assert autotune.show_study("s", sqlite_url).device_hours == pytest.approx(spent * SECOND)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"gpu_hours": 0}, "budget.gpu_hours: Input should be greater than 0"),
        ({"gpu_hours": -1, "n_trials": 5}, "budget.gpu_hours: Input should be greater than 0"),
        ({}, "budget: give n_trials, gpu_hours or both"),
    ],
)
def test_a_budget_that_cannot_be_is_one_line(tmp_path, sqlite_url, capsys, budget, message):
    spec = write_spec(tmp_path / "s.yaml", {"trial": {"kind": "zdt1"}, "budget": budget})
    assert main(["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert autotune.list_studies(sqlite_url) == []

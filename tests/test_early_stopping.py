"""Multi-objective early stopping: the promotion rule on hand-made rungs, stopped trials in
studies run by real workers (a multi-fidelity test function, two processes, SQLite), and a
real 4-bit QLoRA trial on the tiny model stopped at its first rung."""

from __future__ import annotations

import subprocess
import sys
import threading

import optuna
import pytest

from autotune._early_stopping import goes_on, rung_steps
from autotune._runner import Runner
from autotune._samplers import sees_the_search
from autotune.cli import main
from autotune.objectives import synthetic_metrics

from conftest import small_spec, trial_config, write_spec

MIN = ["minimize", "minimize"]


def test_rungs_are_geometric_below_the_step_budget():
    from autotune import EarlyStopping

    assert rung_steps(EarlyStopping(min_steps=10, reduction_factor=3), 100) == [10, 30, 90]
    assert rung_steps(EarlyStopping(min_steps=3, reduction_factor=3), 27) == [3, 9]


def test_a_newcomer_that_dominates_every_trial_goes_on():
    # Nine trials at the rung on three fronts; the newcomer beats them all on both objectives.
    others = [[2, 9], [3, 6], [5, 4], [8, 2], [4, 9], [6, 6], [9, 5], [7, 9], [9, 8]]
    assert goes_on([1, 1], others, MIN, 3)
    # Dominated by the whole first front: stopped.
    assert not goes_on([8, 8], others, MIN, 3)


def test_the_first_trial_at_a_rung_goes_on_and_the_second_must_beat_it():
    assert goes_on([5, 5], [], MIN, 3)
    assert not goes_on([6, 6], [[5, 5]], MIN, 3)
    assert goes_on([4, 6], [[5, 5]], MIN, 3)  # a trade-off: ties (both on the front, both extremes) favour it


def test_within_a_front_the_crowded_point_is_stopped():
    # Six points on one front: the best 6 // 3 = 2 go on. The extremes have infinite crowding
    # distance; a newcomer squeezed between two close points has the smallest.
    front = [[0, 10], [10, 0], [2, 8], [5, 5], [8, 2]]
    assert not goes_on([5.1, 4.9], front, MIN, 3)
    assert goes_on([-1, 11], front, MIN, 3)  # a new extreme


def test_directions_and_non_finite_values():
    assert goes_on([1, 100], [[2, 50]], ["minimize", "maximize"], 2)  # 100 tokens/s beats 50
    assert not goes_on([float("nan"), 1], [], MIN, 3)
    assert goes_on([1, 1], [[float("inf"), 1], [2, 2]], MIN, 3)  # a diverged trial counts, ranked last


def test_the_sampler_sees_a_stopped_trial_as_complete_with_its_rung_values_and_no_rerun():
    study = optuna.create_study(directions=MIN)
    distribution = optuna.distributions.FloatDistribution(0, 1)
    stopped = optuna.trial.create_trial(
        params={"x": 0.5},
        distributions={"x": distribution},
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={"stopped_at_step": 3, "stopped_values": [4.0, 2.0]},
    )
    rerun = optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": distribution}, values=[3.0, 1.0], user_attrs={"verifies": 0, "seed": 43}
    )
    study.add_trials([stopped, rerun])
    seen: list[optuna.trial.FrozenTrial] = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):
            seen.extend(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
            return super().sample_independent(study, trial, name, distribution)

    study.sampler = sees_the_search(Spy(seed=0))
    study.ask({"x": distribution})
    assert [(t.state, t.values) for t in seen] == [(optuna.trial.TrialState.COMPLETE, [4.0, 2.0])]
    assert [t.state for t in study.trials[:2]] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]


def test_multi_fidelity_values_rank_roughly_and_converge():
    x = [0.3, 0.2, 0.7]
    final = synthetic_metrics("zdt1", x)
    early = synthetic_metrics("zdt1", x, fidelity=1 / 9)
    assert early["train_time_s"] == pytest.approx(final["train_time_s"] / 9)
    assert early["eval_loss"] > final["eval_loss"]
    assert synthetic_metrics("zdt1", x, fidelity=1.0) == final


def _worker(name: str, url: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "autotune", "worker", name, "--storage", url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_stop_trials_of_a_multi_fidelity_study(tmp_path, sqlite_url):
    spec = {
        "trial": {"kind": "zdt1", "delay_s": 0.3},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 24},
        "training": {"max_steps": 27},
        "early_stopping": {"min_steps": 3, "reduction_factor": 3},
    }
    assert (
        main(["study", "create", "z", "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    workers = [_worker("z", sqlite_url), _worker("z", sqlite_url)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    by_state = {s: [t for t in trials if t.state.name == s] for s in ("COMPLETE", "PRUNED")}
    assert len(by_state["COMPLETE"]) + len(by_state["PRUNED"]) == 24
    assert len(by_state["PRUNED"]) >= 6, "most configs of a random search are beaten early"
    # Both workers recorded rungs, and ranked against each other's records.
    assert len({t.user_attrs["worker"] for t in trials if t.user_attrs.get("rungs")}) == 2
    for t in by_state["PRUNED"]:
        step = t.user_attrs["stopped_at_step"]
        assert step in (3, 9)
        assert [r["step"] for r in t.user_attrs["rungs"]] == [s for s in (3, 9) if s <= step]
        # What the sampler is told: the last rung's values, the time extrapolated to 27 steps.
        assert t.user_attrs["stopped_values"] == t.user_attrs["rungs"][-1]["values"]
        metrics = t.user_attrs["metrics"]
        assert t.user_attrs["stopped_values"] == [metrics["eval_loss"], metrics["train_time_s"]]
        assert metrics["train_time_s"] == pytest.approx(t.user_attrs["rung_train_time_s"] * 27 / step)
    for t in by_state["COMPLETE"]:
        assert [r["step"] for r in t.user_attrs["rungs"]] == [3, 9]
    shown = subprocess.run(
        [sys.executable, "-m", "autotune", "study", "show", "z", "--storage", sqlite_url],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    assert f"early stopping: {len(by_state['PRUNED'])} trials stopped (pruned), saving" in shown


def test_a_real_qlora_trial_stops_at_its_first_rung(tiny_model, dataset_file):
    config = trial_config(tiny_model, dataset_file, {"max_steps": 3}).model_copy(update={"rungs": [1]})
    asked: list[tuple[int, dict]] = []

    def on_rung(step: int, metrics: dict) -> bool:
        asked.append((step, metrics))
        return False

    runner = Runner(None, trials_per_runner=10)
    try:
        result = runner.run(config, stop=threading.Event(), on_rung=on_rung)
        again = runner.run(config, stop=threading.Event(), on_rung=lambda step, metrics: True)
    finally:
        runner.close()
    ((step, metrics),) = asked
    assert step == 1 and result["info"]["stopped_at_step"] == 1
    assert result["metrics"] == metrics
    assert result["info"]["learning_curve"] == [
        {"step": 1, "eval_loss": metrics["eval_loss"], "train_time_s": metrics["train_time_s"]}
    ]
    # The same warm runner then trains the config to the end: the same loss at the rung.
    assert "stopped_at_step" not in again["info"]
    assert [p["step"] for p in again["info"]["learning_curve"]] == [1, 3]
    assert again["info"]["learning_curve"][0]["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-5)


def test_a_worker_stops_a_qlora_trial_beaten_at_its_first_rung(tmp_path, tiny_model, dataset_file, sqlite_url):
    spec = small_spec(
        tiny_model,
        dataset_file,
        objectives=[{"metric": "eval_loss"}],
        early_stopping={"min_steps": 1, "reduction_factor": 3},
        budget={"n_trials": 2},
        # First a config that learns in one step, then one that barely moves.
        enqueue_trials=[
            {"lora_r": 8, "lora_alpha": 16, "learning_rate": 1e-2},
            {"lora_r": 2, "lora_alpha": 4, "learning_rate": 1e-4},
        ],
    )
    spec["training"] = {"max_steps": 3, "warmup_steps": 0}
    assert (
        main(["study", "create", "q", "--config", str(write_spec(tmp_path / "q.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "q", "--storage", sqlite_url]) == 0
    first, second = optuna.load_study(study_name="q", storage=sqlite_url).get_trials()
    assert first.state.name == "COMPLETE" and [p["step"] for p in first.user_attrs["learning_curve"]] == [1, 3]
    assert second.state.name == "PRUNED" and second.user_attrs["stopped_at_step"] == 1
    assert second.user_attrs["stopped_values"][0] > first.user_attrs["rungs"][0]["values"][0]
    assert second.user_attrs["config"]["rungs"] == [1]

"""Multi-objective early stopping: the promotion rule on hand-made rungs, stopped trials in
studies run by real workers (a multi-fidelity test function, two processes, SQLite), and a
real 4-bit QLoRA trial on the tiny model stopped at its first rung."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import optuna
import pytest

from autotune import EarlyStopping, SpecError, parse_spec
from autotune._early_stopping import reach_rung, rung_cut, rung_places, rung_records, rung_steps
from autotune._runner import Runner
from autotune._samplers import sees_the_search
from autotune._spec import parse_stored_spec
from autotune._study import load_study
from autotune.cli import main
from autotune.objectives import synthetic_metrics

from conftest import small_spec, trial_config, write_spec

MIN = ["minimize", "minimize"]


def test_rungs_are_geometric_below_the_step_budget():
    from autotune import EarlyStopping

    assert rung_steps(EarlyStopping(min_steps=10, reduction_factor=3), 100) == [10, 30, 90]
    assert rung_steps(EarlyStopping(min_steps=3, reduction_factor=3), 27) == [3, 9]


def test_a_step_budget_turns_early_stopping_on_with_quasi_random_proposals(
    tmp_path, capsys, tiny_model, dataset_file, sqlite_url
):
    base = small_spec(tiny_model, dataset_file)
    del base["sampler"]
    spec = parse_spec({**base, "training": {"max_steps": 27}})
    assert spec.early_stopping == EarlyStopping(min_steps=3, reduction_factor=3) and spec.sampler.name == "qmc"
    assert spec.method == "qmc+es"
    named = parse_spec({**base, "training": {"max_steps": 27}, "sampler": {"name": "tpe"}})
    assert named.early_stopping == spec.early_stopping and named.method == "tpe+es"
    off = parse_spec({**base, "training": {"max_steps": 27}, "early_stopping": None})
    assert off.early_stopping is None and off.method == "qmc"
    assert parse_spec({**base, "training": {"max_steps": None}}).method == "qmc"  # epochs: no rungs
    assert parse_spec({**base, "training": {"max_steps": 1}}).early_stopping is None  # no step below the budget
    # A ninth of the steps rounded up: no rung just below the budget (100 steps: 12 and 36, not 99).
    assert parse_spec({**base, "training": {"max_steps": 100}}).early_stopping == EarlyStopping(min_steps=12)
    assert parse_spec({**base, "training": {}}).early_stopping == EarlyStopping(min_steps=7)  # 60 steps unless set
    # The simulated kinds stop early only where asked.
    assert parse_spec({"trial": {"kind": "zdt1"}, "budget": {"n_trials": 4}}).method == "qmc"
    with pytest.raises(SpecError, match=r"sampler.n_startup_trials is an option of tpe or gp: name the sampler"):
        parse_spec({**base, "sampler": {"n_startup_trials": 4}})
    # A study stored before the default keeps what it was created with: no early stopping.
    stored = {k: v for k, v in off.to_json_dict().items() if k != "early_stopping"}
    assert parse_stored_spec(stored, "stored").early_stopping is None

    config = str(write_spec(tmp_path / "a.yaml", {**base, "training": {"max_steps": 27}}))
    assert main(["study", "create", "a", "--config", config, "--storage", sqlite_url]) == 0
    assert "'a': qmc sampler with early stopping at steps 3, 9 of 27, budget" in capsys.readouterr().out
    like = ["--like", "a", "--sampler", "random", "--no-early-stopping", "--storage", sqlite_url]
    assert main(["study", "create", "a-random", *like]) == 0
    assert "'a-random': random sampler, budget" in capsys.readouterr().out
    # Stored as resolved: what workers read back is what create printed.
    assert load_study("a", sqlite_url)[1].early_stopping == spec.early_stopping
    assert load_study("a-random", sqlite_url)[1].method == "random"
    assert main(["study", "list", "--storage", sqlite_url]) == 0
    listed = capsys.readouterr().out
    assert "qmc+es" in listed and "random " in listed


def _place(values: list[float], others: list[list[float]], directions: list[str] = MIN) -> int | None:
    """The newcomer's place (0 the best) among the records at a rung: `others`, then it."""
    reached = [(optuna.trial.create_trial(values=[0, 0]), v) for v in [*others, values]]
    for number, (trial, _) in enumerate(reached):
        trial.number = number
    return rung_places(reached, directions).get(len(others))


def test_a_newcomer_that_dominates_every_trial_is_placed_first():
    # Nine trials at the rung on three fronts; the newcomer beats them all on both objectives.
    others = [[2, 9], [3, 6], [5, 4], [8, 2], [4, 9], [6, 6], [9, 5], [7, 9], [9, 8]]
    assert _place([1, 1], others) == 0
    # Dominated: behind the first front's four and the second's three, on the third with
    # [7, 9] (both extremes of it, so tied: the better place, 7).
    assert _place([8, 8], others) == 7


def test_ties_favour_the_newcomer_and_a_front_ranks_by_crowding():
    assert _place([5, 5], []) == 0
    assert _place([6, 6], [[5, 5]]) == 1
    assert _place([4, 6], [[5, 5]]) == 0  # a trade-off: both on the front, both extremes
    # Six points on one front: the extremes have infinite crowding distance; a newcomer
    # squeezed between two close points has the smallest.
    front = [[0, 10], [10, 0], [2, 8], [5, 5], [8, 2]]
    assert _place([5.1, 4.9], front) == 5
    assert _place([-1, 11], front) == 0  # a new extreme


def test_directions_and_non_finite_values():
    assert _place([1, 100], [[2, 50]], ["minimize", "maximize"]) == 0  # 100 tokens/s beats 50
    assert _place([float("nan"), 1], []) is None
    diverged = [(optuna.trial.create_trial(values=[0, 0]), [float("inf"), 1])]
    assert rung_places(diverged, MIN) == {}  # a diverged trial has no place
    assert _place([3, 3], [[float("inf"), 1], [2, 2]]) == 1  # and places behind no one


def _completed_at_rung(rung_values: list[float], final: list[float], **attrs) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=final, user_attrs={"rungs": [{"step": 3, "values": rung_values}]}, **attrs)


def test_a_rung_stops_trials_only_once_enough_have_completed():
    # Four completed trials whose best at rung 3 is also their best at the end; two rungs, so
    # every third trial (numbers 2, 5, 8, ...) never stops.
    study = optuna.create_study(directions=MIN)
    study.add_trials([_completed_at_rung([1 + i, 1 + i], [i, i]) for i in range(4)])
    beaten = study.ask()
    assert reach_rung(study, beaten, 3, [9, 9], MIN, 3, 2, last=False), (
        "4 completed trials are too few to trust the rung"
    )
    study.tell(beaten, state=optuna.trial.TrialState.PRUNED)
    study.add_trial(_completed_at_rung([5, 5], [5, 5]))
    newcomer = study.ask()
    assert newcomer.number == 6 and not reach_rung(study, newcomer, 3, [9, 9], MIN, 3, 2, last=False)
    assert newcomer.user_attrs["rungs"] == [{"step": 3, "values": [9, 9]}]
    assert reach_rung(study, study.ask(), 3, [0, 0], MIN, 3, 2, last=False)  # beats them all: goes on
    witness = study.ask()
    assert witness.number == 8 and reach_rung(study, witness, 3, [9, 9], MIN, 3, 2, last=False)  # never stopped
    assert not reach_rung(study, study.ask(), 3, [float("nan"), 9], MIN, 3, 2, last=False)  # diverged
    study.ask()
    diverged_witness = study.ask()
    assert diverged_witness.number == 11
    assert not reach_rung(
        study, diverged_witness, 3, [float("nan"), 9], MIN, 3, 2, last=False
    )  # stops, never-stopped or not


def test_a_never_stopped_trial_is_judged_at_the_last_rung_like_any_other():
    # Five completed trials that the rung ranks as they end; trial 5, one of every third (two
    # rungs), is placed last: it goes on past the first rung, and the last rung's cut stops it.
    # With one rung (every second trial, 5 among them) there is no earlier rung: it goes on.
    study = optuna.create_study(directions=MIN)
    study.add_trials([_completed_at_rung([1 + i, 1 + i], [i, i]) for i in range(5)])
    witness = study.ask()
    assert witness.number == 5
    assert reach_rung(study, witness, 3, [9, 9], MIN, 3, 2, last=False)
    assert not reach_rung(study, witness, 3, [9, 9], MIN, 3, 2, last=True)
    assert reach_rung(study, witness, 3, [9, 9], MIN, 3, 1, last=True)


def test_the_cut_widens_to_keep_the_completed_trials_front():
    # Five trials that the rung ranks as they end, and a slow starter: worst at rung 3, best
    # at the end. The cut widens from the best 6 // 3 to the slow starter's place.
    study = optuna.create_study(directions=MIN)
    study.add_trials([_completed_at_rung([1 + i, 1 + i], [2 + i, 2 + i]) for i in range(5)])
    study.add_trial(_completed_at_rung([9, 9], [0, 0]))
    reached = rung_records(study.get_trials(), 3)
    assert rung_cut(reached, rung_places(reached, MIN), MIN, 3) == 6
    ahead, behind = study.ask(), study.ask()  # numbers 6 and 7, ranked with 7 and 8 records
    assert reach_rung(study, ahead, 3, [8, 8], MIN, 3, 2, last=False)  # ahead of the slow starter
    assert not reach_rung(study, behind, 3, [10, 10], MIN, 3, 2, last=False)  # behind it
    # Maximised objectives are turned into losses before the front is taken.
    flipped = optuna.create_study(directions=["maximize", "maximize"])
    flipped.add_trials([_completed_at_rung([-1 - i, -1 - i], [-2 - i, -2 - i]) for i in range(5)])
    flipped.add_trial(_completed_at_rung([-9, -9], [0, 0]))
    reached = rung_records(flipped.get_trials(), 3)
    assert rung_cut(reached, rung_places(reached, ["maximize"] * 2), ["maximize"] * 2, 3) == 6


def test_the_cut_takes_its_front_from_feasible_trials():
    # Five feasible completed trials that the rung ranks as they end, and an infeasible one
    # (memory over the limit, say) that ends best but was worst at the rung: not on the front.
    study = optuna.create_study(directions=MIN)
    study.add_trials([_completed_at_rung([1 + i, 1 + i], [2 + i, 2 + i]) for i in range(5)])
    study.add_trial(_completed_at_rung([9, 9], [0, 0], system_attrs={"constraints": [1.0]}))
    reached = rung_records(study.get_trials(), 3)
    assert rung_cut(reached, rung_places(reached, MIN), MIN, 3) == 6 // 3
    study.add_trial(_completed_at_rung([9, 9], [0, 0]))  # the same, feasible: the cut widens to it
    reached = rung_records(study.get_trials(), 3)
    assert rung_cut(reached, rung_places(reached, MIN), MIN, 3) == 6  # the two tie at place 5


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
        "trial": {"kind": "zdt1", "delay_s": 0.2},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 40},
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
    assert len(by_state["COMPLETE"]) + len(by_state["PRUNED"]) == 40
    # Where too few were stopped, say why: no rungs recorded, or cuts widened to keep the
    # completed trials' front.
    with_rungs = sum(bool(t.user_attrs.get("rungs")) for t in trials)
    reached = {step: rung_records(trials, step) for step in (3, 9)}
    cuts = {step: (rung_cut(r, rung_places(r, MIN), MIN, 3), len(r)) for step, r in reached.items()}
    assert len(by_state["PRUNED"]) >= 5, (
        "configs of a random search are beaten early, once 5 trials have completed; "
        f"{with_rungs} trials recorded rungs; places kept of those at each rung: {cuts}",
        outputs,
    )
    # Each worker's last line counts its stopped trials apart from failed ones.
    counts = [re.search(r"(\d+) complete, (\d+) stopped early, 0 failed", out) for out in outputs]
    assert sum(int(c[1]) for c in counts) == len(by_state["COMPLETE"])
    assert sum(int(c[2]) for c in counts) == len(by_state["PRUNED"])
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
    # Early stopping as a spec with max_steps gets it by default (a rung at step 1 of 3).
    spec = small_spec(
        tiny_model,
        dataset_file,
        objectives=[{"metric": "eval_loss"}],
        budget={"n_trials": 7},
        # Six configs that learn fast, so that 5 or more completed trials reach the rung; then
        # one that barely moves, trial 6 (with one rung, every second trial never stops):
        # behind every completed trial at the rung, the front's among them, so it stops.
        enqueue_trials=[
            {"lora_r": 4, "lora_alpha": 8, "learning_rate": 4e-3},
            {"lora_r": 8, "lora_alpha": 16, "learning_rate": 1e-2},
            {"lora_r": 4, "lora_alpha": 16, "learning_rate": 5e-3},
            {"lora_r": 8, "lora_alpha": 8, "learning_rate": 3e-3},
            {"lora_r": 2, "lora_alpha": 8, "learning_rate": 2e-3},
            {"lora_r": 4, "lora_alpha": 4, "learning_rate": 1e-3},
            {"lora_r": 2, "lora_alpha": 4, "learning_rate": 1e-4},
        ],
    )
    spec["training"] = {"max_steps": 3, "warmup_steps": 0}
    spec.pop("sampler")
    assert (
        main(["study", "create", "q", "--config", str(write_spec(tmp_path / "q.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "q", "--storage", sqlite_url]) == 0
    *learned, last = optuna.load_study(study_name="q", storage=sqlite_url).get_trials()
    assert [t.state.name for t in learned] == ["COMPLETE"] * 6
    assert all([p["step"] for p in t.user_attrs["learning_curve"]] == [1, 3] for t in learned)
    assert last.state.name == "PRUNED" and last.user_attrs["stopped_at_step"] == 1
    assert last.user_attrs["stopped_values"][0] > max(t.user_attrs["rungs"][0]["values"][0] for t in learned)
    assert last.user_attrs["config"]["rungs"] == [1]

"""The benchmark scripts run (on a tiny budget) and write what they say they write."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from autotune import load_spec
from autotune.objectives import load_table

from conftest import trial_config, write_table

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_sample_efficiency_tiny(tmp_path):
    out = tmp_path / "se.json"
    table = write_table(tmp_path / "table.json")
    done = _run(
        str(BENCHMARKS / "sample_efficiency.py"),
        "--out",
        str(out),
        "--seeds",
        "2",
        "--budget",
        "10",
        "--table",
        str(table),
    )
    assert "| random |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["problems"]) == {"zdt1", "dtlz2", "tabular:table.json"}
    # Sobol's first 8 points fall one in each octant of the (log) space, so qmc sees every
    # point of the 2x2x2 table: the whole front.
    assert result["problems"]["tabular:table.json"]["samplers"]["qmc"]["median"]["10"] == pytest.approx(1.0)
    for problem in result["problems"].values():
        assert problem["true_hypervolume"] > 0
        assert set(problem["samplers"]) == {"gp", "tpe", "nsga2", "random", "qmc"}
        assert all(0 <= row["median"]["10"] <= 1 + 1e-9 for row in problem["samplers"].values())


def test_early_stopping_tiny(tmp_path):
    out = tmp_path / "es.json"
    table = write_table(tmp_path / "table.json")  # learning curves at steps 1 and 3
    args = ["--out", str(out), "--seeds", "2", "--table", str(table), "--min-steps", "1"]
    done = _run(str(BENCHMARKS / "early_stopping.py"), *args, "--methods", "random,tpe,random+es,tpe+es")
    assert "| tpe+es |" in done.stdout
    result = json.loads(out.read_text())
    assert result["problem"] == "tabular:table.json" and result["default"] == "qmc+es"
    assert set(result["compute_to_reach_random_final"]) == {"random", "tpe", "random+es", "tpe+es"}
    (zdt1,) = result["other_problems"]
    assert zdt1["problem"] == "zdt1 (multi-fidelity)"
    # On ZDT1 the first rung ranks the completed trials' front among its best, so it stops trials.
    assert zdt1["methods"]["random+es"]["stopped"] > 0


def test_efficiency_tiny(tmp_path):
    """Random's target and every hypervolume are scored on the configs' seed means: random's
    50 trials see all 8 configs of the table, so it holds the whole front (1.0), though each
    trial got one seed's draw."""
    out = tmp_path / "eff.json"
    table = write_table(tmp_path / "table.json", seeds=3)  # eval_loss 0.01 apart per seed
    args = ["--out", str(out), "--table", str(table), "--seeds", "2", "--random-seeds", "5"]
    methods = "tpe,random+es,random+es(guarded),random+hb"  # and the default, qmc+es(witness-to-last-rung)
    done = _run(str(BENCHMARKS / "efficiency.py"), *args, "--methods", methods)
    assert "| tpe+es" not in done.stdout and "| random+es |" in done.stdout and "| random+hb |" in done.stdout
    result = json.loads(out.read_text())
    measured = result["tables"]["table"]
    # 10 random trials of 8 configs hold most of the front: the table cannot rank methods, so
    # it does not decide the default.
    assert measured["difficulty"]["random_at_10"]["median"] > 0.8
    assert result["default"] == "qmc+es(witness-to-last-rung)" and result["choice"]["chosen"] is None
    assert result["choice"]["deciding_tables"] == []
    assert measured["random_target"] == {"hypervolume_ratio": pytest.approx(1.0), "seeds": 5}
    difficulty = measured["difficulty"]
    assert difficulty["configs"] == 8 and difficulty["seeds_per_config"] == 3 and difficulty["failed_configs"] == 1
    assert difficulty["seed_sd_eval_loss"]["pooled"] == pytest.approx(0.01)
    assert set(difficulty["rung_spearman"]) == {"1"}
    assert set(measured["methods"]) == {
        "random",
        "tpe",
        "random+es",
        "random+es(guarded)",
        "random+hb",
        "qmc+es(witness-to-last-rung)",
    }
    for row in measured["methods"].values():
        assert set(row["hv_at_compute"]) == {"0.1", "0.25", "0.5", "1.0"}
        assert all(0 <= hv <= 1 + 1e-9 for hv in row["hv_at_compute"].values())
        assert set(row["compute_to_random_final"]) == {"steps", "seconds"}
    assert measured["methods"]["random+es"]["stopped"] > 0
    # The guard (autotune's until 2026-12-01) let a rung stop trials only once completed trials
    # showed it kept their front.
    assert measured["methods"]["random+es(guarded)"]["stopped"] < measured["methods"]["random+es"]["stopped"]
    missing = subprocess.run(
        [sys.executable, str(BENCHMARKS / "efficiency.py"), "--out", str(out), "--table", "no.json"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no table at 'no.json'" in missing.stderr


def test_a_replay_charged_for_evaluation_pays_each_one_a_trial_runs(tmp_path, monkeypatch):
    """--charge-evaluation: a trial pays its row's seconds outside training (wall_s less
    train_time_s, here 2 s), shared over the curve points (1 and 3), at each one it reaches."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    replay = importlib.import_module("replay")
    table = load_table(str(write_table(tmp_path / "table.json")))
    for evaluation, each in ((False, 0.0), (True, 1.0)):
        run = replay.Replay(replay.ScoredTable(table, evaluation=evaluation), seed=0, budget_s=math.inf)
        trial = run.trial({"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-4})  # 10 s of training
        trial.run_to(1)
        trial.run_to(3)
        assert run.history.seconds == pytest.approx([10 / 3 + each, 10 + 2 * each])


def test_a_replay_says_where_its_seconds_went(tmp_path, monkeypatch):
    """A config run to the end twice, the second time adds nothing; a trial stopped at the
    first curve point paid a third of its config's 11 s. Up to 10 s only the first trial had
    been paid for."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    replay = importlib.import_module("replay")
    run = replay.Replay(replay.ScoredTable(load_table(str(write_table(tmp_path / "table.json")))), 0, math.inf)
    for params in ({"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-4},) * 2:  # 10 s each
        run.trial(params).run_to(3)
    stopped = run.trial({"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3})  # 11 s to the end
    stopped.run_to(1)
    stopped.stop()
    total = 10 + 10 + 11 / 3
    assert run.spending(math.inf) == pytest.approx(
        {
            "completed_new": 10 / total,
            "completed_again": 10 / total,
            "stopped": 11 / 3 / total,
            "never_stopped": 0.0,
            "configs_tried": 2.0,
        }
    )
    assert run.spending(10.0) == pytest.approx(
        {"completed_new": 1.0, "completed_again": 0.0, "stopped": 0.0, "never_stopped": 0.0, "configs_tried": 1.0}
    )


def test_the_oracle_bound_stops_exactly_the_configs_off_the_true_front(tmp_path, monkeypatch):
    """`(oracle)` is a bound, not a method: it knows which configs are on the true front."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    replay, efficiency = importlib.import_module("replay"), importlib.import_module("efficiency")
    problem = replay.ScoredTable(load_table(str(write_table(tmp_path / "table.json"))))
    # Loss falls as training time rises over the 7 configs that did not fail: all on the front.
    assert len(problem.front) == 7
    problem.front = {(4, 8, 1e-4)}
    run = replay.Replay(problem, 0, math.inf, max_trials=20)
    efficiency.run_ours(efficiency.BOUNDS["qmc+es(oracle)"], run)
    finished = {trial.point for trial in run.trials if trial.step == problem.max_steps}
    others = [trial for trial in run.trials if trial.point != (4, 8, 1e-4) and not trial.failed]
    assert finished == {(4, 8, 1e-4)} and run.history.stopped == len(others) > 0


def test_true_rungs_tell_each_rung_the_configs_final_seed_mean(tmp_path, monkeypatch):
    """`+true-rungs` is a bound too: the cut ranks each config by its final mean at the rung
    (at step 1 of the table the loss is 0.02 x the config's index above its final)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    replay, efficiency = importlib.import_module("replay"), importlib.import_module("efficiency")
    problem = replay.ScoredTable(load_table(str(write_table(tmp_path / "table.json", seeds=3))))
    told = []
    monkeypatch.setattr(
        efficiency, "_goes_on", lambda study, trial, step, values, *_, **__: told.append(values) or True
    )
    run = replay.Replay(problem, 0, math.inf, max_trials=12)
    efficiency.run_ours(efficiency.BOUNDS["qmc+es(witnessed)+true-rungs"], run)
    ran = [trial for trial in run.trials if not trial.failed]
    assert len(told) == len(ran) > 0
    assert told == [pytest.approx(list(problem.mean_points[trial.point])) for trial in ran]


def test_efficiency_mixes_sobol_proposals_among_the_samplers(monkeypatch):
    """tpe+qmc(half)+es: the first 10 trials from Sobol, then every other one; the rest from
    the sampler itself (here one that always proposes 0.5)."""
    import optuna

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")
    fixed = optuna.samplers.PartialFixedSampler({"x": 0.5}, optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(sampler=efficiency._WithSobol(fixed, seed=0, every=2))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=16)
    proposed = [t.params["x"] for t in study.trials]
    assert all(x != 0.5 for x in proposed[:10] + proposed[10::2])
    assert proposed[11::2] == [0.5, 0.5, 0.5]


def test_the_widened_cut_keeps_as_many_as_the_completed_front_needs(monkeypatch):
    """random+es(widened), autotune's cut: where the rung would have stopped a completed front
    trial (here the best at the end was 4th of the completed ones at the rung, 5th of the 7
    there with the newcomer), it keeps the best 5 of 7, not 7 // 3 = 2 (the promotion rule
    alone, `+es`) nor all of them (the guard, autotune's until 2026-12-01)."""
    import optuna

    from autotune._early_stopping import rung_cut, rung_places, rung_records

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")
    study = optuna.create_study(directions=["minimize", "minimize"])
    for i in range(1, 7):  # rung values (i, i); the 4th ends best, the others far behind
        final = [0, 0] if i == 4 else [10 + i, 10 + i]
        study.add_trial(optuna.trial.create_trial(values=final, user_attrs={"rungs": [{"step": 3, "values": [i, i]}]}))
    decide = {name: efficiency.CHOSEN_FROM[name] for name in ("random+es", "random+es(widened)", "random+es(guarded)")}
    for at_rung, widened in (([3.5, 3.5], True), ([4.5, 4.5], False)):
        trial = study.ask()
        goes_on = {
            name: efficiency._goes_on(study, trial, 3, at_rung, method, 2, last=False)
            for name, method in decide.items()
        }
        assert goes_on == {"random+es": False, "random+es(widened)": widened, "random+es(guarded)": True}
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    reached = rung_records(study.get_trials(), 3)
    assert rung_cut(reached, rung_places(reached, ["minimize", "minimize"]), ["minimize", "minimize"], 3) == 5


def _rung_study(completed: int, best: int):
    """A study of `completed` trials with rung 3 values (i, i), i = 1.., the `best`-th ending best
    and the others far behind, then two failed trials, and the next trial asked: number
    completed + 2, one that never stops when completed is a multiple of 3 (two rungs)."""
    import optuna

    study = optuna.create_study(directions=["minimize", "minimize"])
    for i in range(1, completed + 1):
        final = [0, 0] if i == best else [10 + i, 10 + i]
        rungs = [{"step": 3, "values": [i, i]}]
        study.add_trial(optuna.trial.create_trial(values=final, user_attrs={"rungs": rungs}))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study, study.ask()


def test_the_evidenced_hedge_lifts_only_where_the_rung_has_earned_its_plain_cut(monkeypatch):
    """qmc+es(evidenced): the next trial that never stops is placed last at the rung. It goes
    on, as under the hedge shipped until 2026-12-01 (witnessed), while fewer than 5 never-stopped trials have
    completed through the rung, or while the completed front's trial was placed beyond the
    rung's plain third (the cut widened); it is stopped like any other trial once 5 have
    completed and the front's trial was the best there."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")
    decide = {name: efficiency.CHOSEN_FROM[name] for name in ("qmc+es(witnessed)", "qmc+es(evidenced)")}
    for completed, best, goes_on in ((15, 1, False), (15, 12, True), (12, 1, True)):
        study, trial = _rung_study(completed, best)
        at_rung = [completed + 0.5] * 2
        decided = {
            name: efficiency._goes_on(study, trial, 3, at_rung, method, 2, last=False)
            for name, method in decide.items()
        }
        assert decided == {"qmc+es(witnessed)": True, "qmc+es(evidenced)": goes_on}, (completed, best)


def test_a_witness_to_the_last_rung_is_judged_there_by_the_cut(monkeypatch):
    """qmc+es(witness-to-last-rung): trial 17 never stops before the last rung, wherever it is
    placed; at the last rung it goes on only within the cut (the best 5 of 16 here), as trial
    18, one that may be stopped anywhere, does at every rung."""
    import optuna

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")
    method = efficiency.CHOSEN_FROM["qmc+es(witness-to-last-rung)"]
    for last, placed_last, expected in ((False, True, True), (True, True, False), (True, False, True)):
        study, witness = _rung_study(15, 1)
        at_rung = [15.5, 15.5] if placed_last else [1.5, 1.5]
        assert efficiency._goes_on(study, witness, 3, at_rung, method, 2, last) is expected, (last, placed_last)
        study.tell(witness, state=optuna.trial.TrialState.PRUNED)
        other = study.ask()
        assert efficiency._goes_on(study, other, 3, at_rung, method, 2, last) is (not placed_last), (last, placed_last)


@pytest.mark.slow
def test_overhead_tiny(tmp_path, tiny_model):
    out = tmp_path / "oh.json"
    args = ["--out", str(out), "--sizes", "5", "--samples", "2", "--workers", "1,4", "--model", str(tiny_model)]
    done = _run(str(BENCHMARKS / "overhead.py"), *args, "--trials", "2", "--max-steps", "1", "--max-length", "128")
    assert "| sqlite | 4 |" in done.stdout and "| warm | 1 |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["samplers"]) == {f"{s}@5" for s in ("gp", "tpe", "nsga2", "random", "qmc")}
    cold, warm = result["per_trial"]["rows"]["cold"], result["per_trial"]["rows"]["warm"]
    assert all(row["load_base_s"] > 0 for row in cold), "a fresh process loads the model every trial"
    assert warm[0]["load_base_s"] > 0 and warm[1]["load_base_s"] == 0, "a warm runner loads it once"
    assert [r["eval_loss"] for r in warm] == pytest.approx([r["eval_loss"] for r in cold], abs=1e-5)


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_prints_its_table_and_writes_its_json(tmp_path, monkeypatch, capsys):
    """Each scenario is a row of the table and of the JSON (without the workers' logs); here
    each is 2 workers and 6 trials (tests/test_reliability.py runs the real sizes and faults)."""
    load = _script("load")
    run_load = load.run_load
    monkeypatch.setattr(load, "run_load", lambda url, n_workers, n_trials, **kwargs: run_load(url, 2, 6))
    monkeypatch.delenv("AUTOTUNE_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["load.py", "--out", str(tmp_path / "load.json")])
    load.main()
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("| storage | workers | trials | complete | lost | duplicated | errors | kills |")
    assert len(rows) == 2 and all(row.startswith("| sqlite | 2 | 6 | 6 | 0 | 0 | 0 | 0 |") for row in rows)
    written = json.loads((tmp_path / "load.json").read_text())
    assert [(r["complete"], r["lost"], r["duplicated"], r["errors"]) for r in written] == [(6, 0, 0, 0)] * 2
    assert "outputs" not in written[0] and not written[0]["timed_out"]


def test_gpu_qlora_reports_a_failed_config_as_a_row(tmp_path, dataset_file):
    """Each config trains in its own process: one that fails is a row with its error's last
    line, and the run goes on. The spec it benchmarks names the model whose kernels it checks."""
    gpu_qlora = _script("gpu_qlora")
    assert f'name_or_path="{load_spec(gpu_qlora.SPEC).model.name_or_path}"' in gpu_qlora.CHECK_CUDA_KERNELS
    missing = tmp_path / "no-model"
    row = gpu_qlora.run_config(trial_config(missing, dataset_file))
    assert f"model {missing} does not exist" in row["error"] and "\n" not in row["error"]
    assert row["wall_s"] > 0 and "metrics" not in row


def test_tabular_grid_tiny(tmp_path, tiny_model, dataset_file):
    out = tmp_path / "grid.json"
    args = ["--out", str(out), "--model", str(tiny_model), "--dataset", str(dataset_file), "--max-steps", "3"]
    grid = ["--lora-r", "4", "--lora-alpha", "4,16", "--learning-rate", "1e-3", "--batch-size", "2", "--processes", "1"]
    seeds = ["--curve-steps", "1", "--seeds", "2", "--train-examples", "20", "--eval-examples", "4"]
    _run(str(BENCHMARKS / "tabular_grid.py"), *args, *grid, *seeds)
    table = load_table(str(out))
    assert table.grid == {
        "lora_r": [4],
        "lora_alpha": [4, 16],
        "learning_rate": [1e-3],
        "per_device_train_batch_size": [2],
    }
    assert table.curve_steps == [1, 3]
    for rows in table.rows.values():
        assert [row["seed"] for row in rows] == [42, 43]
        for row in rows:
            assert row["eval_loss"] > 0 and row["train_time_s"] > 0
            first, last = row["learning_curve"]
            assert first["step"] == 1 and 0 < first["train_time_s"] < last["train_time_s"]
            assert last == {"step": 3, "eval_loss": row["eval_loss"], "train_time_s": row["train_time_s"]}
        assert rows[0]["eval_loss"] != rows[1]["eval_loss"]  # the seed moves the held-out loss
    made = json.loads(out.read_text())
    assert made["config"]["training"]["max_steps"] == 3 and "torch" in made["versions"]
    assert made["config"]["dataset"]["max_samples"] == 24 and made["seeds"] == [42, 43]
    # A rerun resumes from the rows already measured.
    assert "4 runs done, 0 to go" in _run(str(BENCHMARKS / "tabular_grid.py"), *args, *grid, *seeds).stdout


def test_the_rule_chooses_by_the_worst_deciding_table_and_says_how_precisely_it_was_measured(monkeypatch):
    """The smallest worst case over the tables that decide (random@10 at most 0.8) wins: `b`
    never reaches random's target on a table too easy to decide and is chosen; the choice names
    each method's worst table with the 95% interval of its median there."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")

    def row(seconds, ci, hv=0.8):
        return {
            "compute_to_random_final": {"seconds": seconds},
            "compute_to_random_final_ci95": {"seconds": ci},
            "hv_at_compute": {"0.25": hv},
        }

    def table(random_at_10, a, b):
        return {"difficulty": {"random_at_10": {"median": random_at_10}}, "methods": {"a": a, "b": b}}

    tables = {
        "hard": table(0.7, row(0.97, [0.84, 1.15]), row(0.5, [0.4, 0.6])),
        "harder": table(0.75, row(0.4, [0.3, 0.5]), row(0.9, [0.7, None])),
        "easy": table(0.9, row(0.3, [0.2, 0.4]), row(None, [None, None])),
    }
    choice = efficiency.choose_default(tables, ["a", "b"])
    assert choice["chosen"] == "b" and choice["deciding_tables"] == ["hard", "harder"]
    assert choice["worst_case"]["a"] | {"hv_at_0.25": 0} == {
        "seconds_to_random_final": 0.97,
        "table": "hard",
        "ci95": [0.84, 1.15],
        "hv_at_0.25": 0,
    }
    assert choice["worst_case"]["b"]["table"] == "harder" and choice["worst_case"]["b"]["ci95"] == [0.7, None]


def test_the_median_interval_widens_with_the_spread_and_is_open_where_runs_never_reached(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    efficiency = importlib.import_module("efficiency")
    low, high = efficiency._median_ci([0.5] * 50 + [1.0] * 50)
    assert 0.5 <= low <= 0.75 <= high <= 1.0
    assert efficiency._median_ci([0.6] * 100) == [0.6, 0.6]
    assert efficiency._median_ci([0.5] * 40 + [math.inf] * 60)[1] is None  # most runs never reached

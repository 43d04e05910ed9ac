"""`trial: {kind: tabular, table: FILE}` replays a table of real runs: each trial gets the metrics
measured at the grid point nearest its config, and a point that failed fails the trial."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autotune import load_spec, parse_spec
from autotune.cli import main
from autotune.objectives import load_table

from conftest import TABLE_FAILED_POINT, TABLE_GRID, write_spec, write_table

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
SEARCH_SPACE = {name: {"low": min(values), "high": max(values), "log": True} for name, values in TABLE_GRID.items()}


def test_worker_replays_the_nearest_grid_point(tmp_path, sqlite_url):
    table = write_table(tmp_path / "table.json")
    spec = {
        "trial": {"kind": "tabular", "table": "table.json"},  # relative to the spec's folder
        "objectives": [{"metric": "eval_loss"}, {"metric": "peak_mem_gb"}],
        "search_space": SEARCH_SPACE,
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 12},
        # Nearest on a log scale: r 7 is nearer 4 than 16 (log 7 < log 8), alpha 17 nearer 32.
        "enqueue_trials": [
            {"lora_r": 7, "lora_alpha": 17, "learning_rate": 9e-4},
            dict(zip(["lora_r", "lora_alpha", "learning_rate"], TABLE_FAILED_POINT, strict=True)),
        ],
    }
    create = ["study", "create", "t", "--config", str(write_spec(tmp_path / "t.yaml", spec)), "--storage", sqlite_url]
    assert main(create) == 0
    assert main(["worker", "t", "--storage", sqlite_url]) == 0

    rows = json.loads(table.read_text())["rows"]
    by_point = {(r["lora_r"], r["lora_alpha"], r["learning_rate"]): r for r in rows}
    trials = optuna.load_study(study_name="t", storage=sqlite_url).get_trials()
    assert len(trials) == 12
    first, failed, *rest = trials
    assert first.user_attrs["grid_point"] == {"lora_r": 4, "lora_alpha": 32, "learning_rate": 1e-3}
    assert first.values == [by_point[(4, 32, 1e-3)]["eval_loss"], by_point[(4, 32, 1e-3)]["peak_mem_gb"]]
    assert failed.user_attrs["failure_kind"] == "config"
    assert failed.user_attrs["failure_reason"] == "failed when the table was made: CUDA out of memory."
    assert failed.constraints["config_failed"] == 1.0
    for trial in rest:
        if trial.user_attrs.get("failure_kind") == "config":  # the sampler hit the failed point again
            assert trial.user_attrs["failure_reason"] == failed.user_attrs["failure_reason"]
            continue
        point = tuple(trial.user_attrs["grid_point"].values())
        assert trial.values == [by_point[point]["eval_loss"], by_point[point]["peak_mem_gb"]]


def test_a_table_with_seeds_replays_one_seed_per_trial(tmp_path, sqlite_url):
    """Each trial gets one seed's row of its config, drawn from its seed and number: the draws
    differ between trials, a second study of the same spec repeats them, and the table's
    means average the seeds."""
    table = write_table(tmp_path / "table.json", seeds=3)
    spec = {
        "trial": {"kind": "tabular", "table": "table.json"},
        "search_space": {"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-4},  # one config, 20 times
        "budget": {"n_trials": 20},
    }
    path = write_spec(tmp_path / "t.yaml", spec)
    draws = []
    for name in ("a", "b"):
        assert main(["study", "create", name, "--config", str(path), "--storage", sqlite_url]) == 0
        assert main(["worker", name, "--storage", sqlite_url]) == 0
        trials = optuna.load_study(study_name=name, storage=sqlite_url).get_trials()
        draws.append([(t.user_attrs["table_seed"], t.values[0]) for t in trials if t.values])
    assert draws[0] == draws[1] and len(draws[0]) == 20
    assert {seed for seed, _ in draws[0]} == {42, 43, 44}
    for seed, loss in draws[0]:
        assert loss == pytest.approx(3.0 + 0.01 * (seed - 42))
    replayed = load_table(str(table))
    assert replayed.means[(4, 8, 1e-4)]["eval_loss"] == pytest.approx(3.01)
    assert replayed.means[(4, 8, 1e-4)]["learning_curve"][0] == {
        "step": 1,
        "eval_loss": pytest.approx(3.01),
        "train_time_s": pytest.approx(10 / 3),
    }
    assert "error" in replayed.means[TABLE_FAILED_POINT]


def test_committed_benchmark_replays(tmp_path, sqlite_url):
    """The CPU table in the repo is complete and its example spec runs as the README says."""
    spec = BENCHMARKS / "specs" / "tabular_smollm2_cpu.yaml"
    assert main(["study", "create", "tab", "--config", str(spec), "--storage", sqlite_url]) == 0
    assert main(["worker", "tab", "--storage", sqlite_url, "--n-trials", "5"]) == 0
    trials = optuna.load_study(study_name="tab", storage=sqlite_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    table = load_table(str(BENCHMARKS / "results" / "tabular_smollm2_cpu.json"))
    assert [len(v) for v in table.grid.values()] == [7, 7, 6]
    for trial in trials:
        (row,) = table.rows[tuple(trial.user_attrs["grid_point"].values())]  # one seed per config
        assert trial.values == [row["eval_loss"], row["train_time_s"]]


def test_committed_learning_curve_table_replays_with_early_stopping(sqlite_url):
    """The CPU learning-curve table is complete (108 configs, 3 seeds each), and its spec runs
    with early stopping: stopped trials took one seed's values at their rung, finished ones one
    seed's final values. 50 trials: the rungs stop none until completed trials show they keep the front."""
    spec = BENCHMARKS / "specs" / "tabular_smollm2_curves_cpu.yaml"
    assert main(["study", "create", "tabc", "--config", str(spec), "--storage", sqlite_url]) == 0
    assert main(["worker", "tabc", "--storage", sqlite_url]) == 0  # the spec's 50 trials
    table = load_table(str(BENCHMARKS / "results" / "tabular_smollm2_curves_cpu.json"))
    assert table.curve_steps == [3, 9, 27]
    assert len(table.rows) == 108 and all(len(seeds) == 3 for seeds in table.rows.values())
    trials = optuna.load_study(study_name="tabc", storage=sqlite_url).get_trials()
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ran) == 50 and any(t.state.name == "PRUNED" for t in ran)
    for trial in ran:
        seeds = table.rows[tuple(trial.user_attrs["grid_point"].values())]
        if trial.state.name == "COMPLETE":
            assert trial.values in [[row["eval_loss"], row["train_time_s"]] for row in seeds]
            continue
        step = trial.user_attrs["stopped_at_step"]
        at_step = [next(p for p in row["learning_curve"] if p["step"] == step) for row in seeds]
        assert trial.user_attrs["stopped_values"] in [[p["eval_loss"], p["train_time_s"] * 27 / step] for p in at_step]


def test_a_table_is_read_from_the_specs_folder(tmp_path):
    write_table(tmp_path / "table.json")
    spec = load_spec(
        write_spec(
            tmp_path / "t.yaml", {"trial": {"kind": "tabular", "table": "table.json"}, "budget": {"n_trials": 2}}
        )
    )
    assert spec.trial.kind == "tabular" and spec.trial.table == str(tmp_path / "table.json")
    assert parse_spec(spec.to_json_dict()) == spec  # stored with the study, read back the same


def test_a_config_that_failed_before_any_success_is_not_trained_again(tmp_path, sqlite_url):
    """Before any trial succeeds a failed config is stored FAIL (there is no penalty to tell
    the sampler yet), but it was tried all the same: proposed again (here: queued twice), it
    is caught as a duplicate and not trained."""
    write_table(tmp_path / "table.json")
    spec = {
        "trial": {"kind": "tabular", "table": "table.json"},
        "search_space": SEARCH_SPACE,
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 2},
    }
    create = ["study", "create", "t", "--config", str(write_spec(tmp_path / "t.yaml", spec)), "--storage", sqlite_url]
    assert main(create) == 0
    study = optuna.load_study(study_name="t", storage=sqlite_url)
    for _ in range(2):
        study.enqueue_trial(dict(zip(TABLE_GRID, TABLE_FAILED_POINT, strict=True)))
    assert main(["worker", "t", "--storage", sqlite_url]) == 0
    first, again, *rest = study.get_trials()
    assert first.state.name == "FAIL" and first.user_attrs["failure_kind"] == "config"
    assert again.params == first.params and again.user_attrs["failure_kind"] == "duplicate"
    (second,) = rest
    assert second.params != first.params, "the budget's second trial is a new config"

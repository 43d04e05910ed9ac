"""`autotune verify`: the front's configs trained again with new seeds by the normal workers,
their mean ± std in `study show`, the report and `export`, and the study's signal to noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import autotune
from autotune.cli import main
from autotune.dashboards import collect, format_value, report_figures

from conftest import open_in_chromium, small_spec, write_spec


def _noisy_study(tmp_path: Path, url: str, noise: float, n_trials: int = 12) -> None:
    """A noisy test function's study, its configs drawn at creation from the spec's seed (a
    worker's own seed mixes in its process id), so that its front is the same every time."""
    spec = {
        "trial": {"kind": "zdt1", "noise": noise},
        "sampler": {"name": "random", "seed": 0, "n_pilot_trials": n_trials},
        "budget": {"n_trials": n_trials},
    }
    assert main(["study", "create", "z", "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", url]) == 0
    assert main(["worker", "z", "--storage", url]) == 0


def _show(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["study", "show", "z", "--storage", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_verify_reruns_the_front_with_new_seeds_through_the_workers(tmp_path, sqlite_url, capsys):
    _noisy_study(tmp_path, sqlite_url, noise=0.05)
    front = [row["number"] for row in _show(sqlite_url, capsys)["pareto"]]

    assert main(["verify", "z", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert f"queued {3 * len(front)} re-runs of trial {', '.join(map(str, front))} with seeds 43, 44, 45" in out
    assert main(["verify", "z", "--storage", sqlite_url]) == 0  # again: nothing more to queue
    assert f"queued 0 re-runs of trial {', '.join(map(str, front))}" in capsys.readouterr().out

    assert main(["worker", "z", "--storage", sqlite_url]) == 0
    worker_out = capsys.readouterr().out
    assert f"(re-run of trial {front[0]}, seed 43)" in worker_out

    trials = autotune.load_study("z", sqlite_url)[0].get_trials()
    reruns = [t for t in trials if "verifies" in t.user_attrs]
    assert len(trials) == 12 + 3 * len(front) and all(t.state == TrialState.COMPLETE for t in trials)
    assert {(t.user_attrs["verifies"], t.user_attrs["seed"]) for t in reruns} == {
        (n, s) for n in front for s in (43, 44, 45)
    }
    assert all(t.params == trials[t.user_attrs["verifies"]].params for t in reruns)

    shown = _show(sqlite_url, capsys)
    assert [row["number"] for row in shown["pareto"]] == front  # re-runs are no points of the search
    verified = shown["verification"]["verified"]
    assert sorted(int(n) for n in verified) == front
    for number, config in verified.items():
        assert config["seeds"] == [43, 44, 45]
        assert config["mean"]["eval_loss"] != trials[int(number)].values[0]
        assert 0 < config["std"]["eval_loss"] < 0.2
        assert config["std"]["train_time_s"] == pytest.approx(0, abs=1e-12)  # the cost has no noise
    eval_loss = shown["verification"]["seed_spread"][0]
    assert eval_loss["metric"] == "eval_loss" and 0.01 < eval_loss["seed_sd"] < 0.12
    assert eval_loss["signal_to_noise"] == pytest.approx(eval_loss["front_sd"] / eval_loss["seed_sd"])

    assert main(["study", "show", "z", "--storage", sqlite_url]) == 0
    text = capsys.readouterr().out
    assert f"{len(front)} configs verified" in text and "eval_loss: one config's seed spread (sd)" in text
    assert " ± " in text and "signal to noise" in text


def test_export_verified_and_the_report(tmp_path, sqlite_url, capsys):
    _noisy_study(tmp_path, sqlite_url, noise=0.05)
    assert main(["verify", "z", "--pick", "knee", "--seeds", "2", "--storage", sqlite_url]) == 0
    assert main(["worker", "z", "--storage", sqlite_url]) == 0
    knee = autotune.export("z", sqlite_url, pick="knee")[0]
    assert knee["verified"]["seeds"] == [43, 44]

    out = tmp_path / "best.yaml"
    assert main(["export", "z", "--verified", "--out", str(out), "--storage", sqlite_url]) == 0
    entries = yaml.safe_load(out.read_text())
    assert [e["trial"] for e in entries] == [knee["trial"]]  # the front's other configs are not verified
    assert set(entries[0]["verified"]) == {"trials", "seeds", "mean", "std", "within_seed_spread_of"}
    assert len(autotune.export("z", sqlite_url)) > 1  # without --verified: the whole front

    info, _ = autotune.build_report("z", sqlite_url)
    front_figure = report_figures(info)[0]
    bars = [t for t in front_figure.data if t.error_x is not None and t.error_x.array is not None]
    assert len(bars) == 1 and len(bars[0].x) == 1  # eval_loss against train_time_s: the knee, verified
    assert bars[0].error_x.array[0] > 0 and bars[0].error_y.array[0] == 0  # seed noise in the loss only
    written = autotune.report("z", sqlite_url, out=tmp_path / "report")
    summary = written["markdown"].read_text()
    assert "1 config verified" in summary and "signal to noise" in summary and " ± " in summary
    assert "verified, mean" in written["html"].read_text()  # the error-bar trace (± is escaped in its JSON)
    open_in_chromium(written["html"], tmp_path)  # the error bars draw with no script error


@pytest.mark.parametrize(("noise", "marked"), [(1e-9, False), (0.2, True)])
def test_a_front_config_within_the_seed_spread_is_marked(tmp_path, sqlite_url, noise, marked):
    """With seed noise far above the front's differences, some config on the front beats a
    neighbour only by noise; with next to none, every config stands apart."""
    _noisy_study(tmp_path, sqlite_url, noise=noise, n_trials=20)
    autotune.verify("z", sqlite_url, seeds=3)
    assert main(["worker", "z", "--storage", sqlite_url]) == 0
    entries = autotune.export("z", sqlite_url, verified=True)
    assert len(entries) == 5  # the front
    assert any(e["verified"]["within_seed_spread_of"] for e in entries) is marked


def test_a_killed_reruns_config_is_run_again(tmp_path, sqlite_url, capsys):
    """A re-run that a stopped worker left failed is queued again by verify; the budget of the
    search is untouched by re-runs."""
    _noisy_study(tmp_path, sqlite_url, noise=0.05, n_trials=4)
    plan = autotune.verify("z", sqlite_url, pick="knee", seeds=2)
    study = autotune.load_study("z", sqlite_url)[0]
    interrupted = study.ask()  # the first re-run, as a worker takes it, then stopped
    study._storage.set_trial_user_attr(interrupted._trial_id, "failure_kind", "interrupted")
    study.tell(interrupted, state=TrialState.FAIL)
    again = autotune.verify("z", sqlite_url, pick="knee", seeds=2)
    assert (plan.queued, again.queued, again.queued_before) == (2, 1, 1)
    assert main(["worker", "z", "--storage", sqlite_url]) == 0
    shown = _show(sqlite_url, capsys)
    assert shown["verification"]["verified"][str(plan.configs[0])]["seeds"] == [44, 43]
    assert shown["states"] == {"COMPLETE": 6, "FAIL": 1}


def test_verify_on_the_tiny_model_trains_with_new_seeds(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    spec = small_spec(tiny_model, dataset_file, budget={"n_trials": 2})
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert main(["verify", "s", "--pick", "knee", "--seeds", "2", "--storage", sqlite_url]) == 0
    assert main(["worker", "s", "--storage", sqlite_url]) == 0

    study = autotune.load_study("s", sqlite_url)[0]
    assert autotune.run_worker("s", sqlite_url).budget_reached  # re-runs did not use the budget
    reruns = [t for t in study.get_trials() if "verifies" in t.user_attrs]
    assert [t.state for t in reruns] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["config"]["training"]["seed"] for t in reruns] == [43, 44]
    assert [t.user_attrs["seed"] for t in reruns] == [43, 44]
    first, second = (t.values[0] for t in reruns)
    assert first != second  # another seed: another LoRA initialisation and data order
    assert len(study.get_trials()) == 4
    capsys.readouterr()
    assert main(["study", "show", "s", "--storage", sqlite_url]) == 0
    assert "1 config verified" in capsys.readouterr().out
    assert optuna.load_study(study_name="s", storage=sqlite_url).best_trials  # the study is whole


def test_a_verified_config_has_the_mean_and_spread_of_the_specs_own_metrics_too():
    """A metric of the spec's `metrics:` that is no objective is carried beside the objectives,
    and a verified config gets its mean ± std over the re-runs as the objectives do."""
    study = optuna.create_study(directions=["minimize"])

    def add(eval_loss: float, exact_match: float, **record: Any) -> None:
        metrics = {"eval_loss": eval_loss, "train_time_s": 1.0, "exact_match": exact_match}
        study.add_trial(
            optuna.trial.create_trial(
                params={"lora_r": 8},
                distributions={"lora_r": optuna.distributions.IntDistribution(4, 16)},
                values=[eval_loss],
                user_attrs={"metrics": metrics, **record},
            )
        )

    add(1.0, 0.5)
    add(1.1, 0.4, verifies=0, seed=43)
    add(1.3, 0.8, verifies=0, seed=44)
    points = collect(study, ["eval_loss"], ["minimize"], "tpe", metrics=["exact_match", "my_score"])
    assert points.measured == ["exact_match"]  # my_score was never recorded: no column for it
    assert points.pareto[0].metrics == {"eval_loss": 1.0, "exact_match": 0.5}
    verified = points.verification.verified[0]
    assert verified.mean == pytest.approx({"eval_loss": 1.2, "exact_match": 0.6})
    assert verified.std["exact_match"] == pytest.approx(0.2828, abs=1e-4)
    assert format_value(0.5, "exact_match", verified) == "0.5 → 0.6 ± 0.28"
    # Re-runs that recorded no exact_match (the spec changed between them): no mean, no NaN.
    add(1.0, 0.5)
    study.add_trial(optuna.trial.create_trial(values=[1.2], user_attrs={"metrics": {"eval_loss": 1.2}, "verifies": 3}))
    study.add_trial(optuna.trial.create_trial(values=[1.4], user_attrs={"metrics": {"eval_loss": 1.4}, "verifies": 3}))
    verified = collect(study, ["eval_loss"], ["minimize"], "tpe", metrics=["exact_match"]).verification.verified[3]
    assert verified.mean == pytest.approx({"eval_loss": 1.3})
    assert format_value(0.5, "exact_match", verified) == "0.5"

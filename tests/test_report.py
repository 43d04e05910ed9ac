"""Baselines, reports, the dashboard and export, on studies the tests fill with
create_trial (real studies in SQLite; no training needed to check the numbers)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import optuna
import pytest
import yaml

import autotune
from autotune.cli import main
from autotune.dashboards import hypervolume
from autotune.objectives import Hyperparameters, TrialConfig, bnb_kwargs, lora_kwargs, sft_kwargs

from conftest import open_in_chromium, small_spec, write_spec, write_table


def _spec(tmp_path, model, data, **overrides):
    return autotune.load_spec(write_spec(tmp_path / "study.yaml", small_spec(model, data, **overrides)))


def _add(
    study: optuna.Study,
    spec: autotune.StudySpec,
    r: int,
    lr: float,
    loss: float,
    seconds: float,
    mem: float = 1.0,
    **extra_attrs: str,
) -> None:
    params = {"lora_r": r, "lora_alpha": 8, "learning_rate": lr}
    hp = Hyperparameters(
        lora_r=r,
        lora_alpha=8,
        lora_dropout=0.05,
        target_modules="all-linear",
        learning_rate=lr,
        optim="paged_adamw_8bit",
        per_device_train_batch_size=4,
    )
    config = TrialConfig(
        model=spec.model, dataset=spec.dataset, training=spec.training, hyperparameters=hp, cache_dir="/nonexistent"
    )
    # What a trial records: the library kwargs it trained with, compute dtype resolved (a GPU's).
    resolved = config.model_copy(update={"training": spec.training.model_copy(update={"compute_dtype": "bfloat16"})})
    metrics = {
        "eval_loss": loss,
        "perplexity": float(np.exp(loss)),
        "train_loss": loss,
        "train_time_s": seconds,
        "peak_mem_gb": mem,
        "tokens_per_s": 1000.0 / seconds,
    }
    distributions = {
        "lora_r": optuna.distributions.IntDistribution(2, 8, log=True),
        "lora_alpha": optuna.distributions.CategoricalDistribution([4, 8, 16]),
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    attrs = {
        "config": config.model_dump(mode="json"),
        "metrics": metrics,
        "seed": 42,
        "versions": {"peft": "x"},
        "device": "cpu",
        "compute_dtype": "bfloat16",
        "lora_config": lora_kwargs(hp),
        "sft_config": {k: v for k, v in sft_kwargs(resolved, "", use_cpu=True).items() if k != "output_dir"},
        "quantization_config": bnb_kwargs(resolved.training),
        **extra_attrs,
    }
    study.add_trial(
        optuna.trial.create_trial(params=params, distributions=distributions, values=[loss, seconds], user_attrs=attrs)
    )


@pytest.fixture
def filled(tmp_path, tiny_model, dataset_file, sqlite_url):
    """A gp study and its random baseline with known trials."""
    spec = _spec(tmp_path, tiny_model, dataset_file, sampler={"name": "gp"})
    study = autotune.create_study("s", spec, sqlite_url)
    baseline = autotune.create_study(
        "s-random",
        spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"name": "random"})}),
        sqlite_url,
        like="s",
    )
    for r, lr, loss, seconds in [
        (2, 1e-3, 3.0, 10.0),
        (4, 2e-3, 2.0, 20.0),
        (8, 3e-3, 1.0, 30.0),
        (8, 1e-4, 3.5, 35.0),
    ]:
        _add(study, spec, r, lr, loss, seconds)
    for r, lr, loss, seconds in [(2, 1e-2, 3.0, 20.0), (4, 1e-4, 2.5, 30.0)]:
        _add(baseline, spec, r, lr, loss, seconds)
    return sqlite_url, spec


def test_hypervolume_against_a_hand_computed_case():
    points = [np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.array([0.5, 0.5])]
    # Boxes to (1.1, 1.1): 0.11 + 0.11 + 0.36, less the overlaps 0.01 + 0.06 + 0.06, plus 0.01 counted out thrice.
    assert hypervolume(points, 1.1) == pytest.approx(0.46)
    assert hypervolume([np.array([1.2, 0.0])], 1.1) == 0.0  # beyond the reference point


def test_report_info_numbers(filled):
    url, spec = filled
    info, _ = autotune.build_report("s", url, baseline="s-random")
    assert sorted(p.number for p in info.study.pareto) == [0, 1, 2]
    assert [p.number for p in info.baseline.pareto] == [0, 1]
    # Normalised between the ideal (1.0, 10 s) and nadir (3.0, 30 s) of the joint front,
    # the study's front is (1, 0), (0.5, 0.5), (0, 1): the hand-computed case above.
    assert info.bounds == [(1.0, 3.0), (10.0, 30.0)]
    assert info.hypervolume["s"] == pytest.approx([0.11, 0.11 + 0.6 * 0.6 - 0.1 * 0.6, 0.46, 0.46])
    # The baseline's (1, 0.5) and (0.75, 1): 0.06 + 0.035 - 0.01.
    assert info.hypervolume["s-random"] == pytest.approx([0.06, 0.085])
    assert info.trials_to_reach_baseline == 1
    assert set(info.importances["s"]) == {"eval_loss", "train_time_s"}


def test_stopped_trials_are_shown_as_such_with_the_training_time_saved(filled, tmp_path):
    url, spec = filled
    study = optuna.load_study(study_name="s", storage=url)
    # Stopped at step 1 of 3 after 5 s: its whole run would have taken 15 s.
    stopped = optuna.trial.create_trial(
        params={"lora_r": 2, "lora_alpha": 8, "learning_rate": 1e-4},
        distributions=study.trials[0].distributions,
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={
            "stopped_at_step": 1,
            "stopped_values": [3.9, 15.0],
            "rung_train_time_s": 5.0,
            "metrics": {"eval_loss": 3.9, "train_time_s": 15.0},
        },
    )
    study.add_trial(stopped)
    info, _ = autotune.build_report("s", url, baseline="s-random")
    assert info.study.stopped == 1 and info.study.failures == {}
    assert info.study.budget_trials == [0, 1, 2, 3, 4]
    assert info.study.train_time_s == [10.0, 20.0, 30.0, 35.0, 5.0]  # what each trial took
    assert info.study.train_time_saved_s == 10.0
    assert info.hypervolume["s"][-1] == info.hypervolume["s"][-2]  # not on the front
    paths = autotune.report("s", url, baseline="s-random", out=tmp_path / "rep")
    text = paths["markdown"].read_text()
    assert "4 succeeded of 5 trials, 1 stopped early (saving 9% of the training time)" in text  # 10 of 110 s
    summary = autotune.show_study("s", url)
    assert (summary.stopped_early, summary.train_time_s, summary.train_time_saved_s) == (1, 100.0, 10.0)


def test_report_opens_in_headless_chromium(filled, tmp_path, capsys):
    url, _ = filled
    assert main(["report", "s", "--baseline", "s-random", "--storage", url, "--out", str(tmp_path / "rep")]) == 0
    page = tmp_path / "rep" / "report.html"
    assert "<script" in page.read_text() and 'src="http' not in page.read_text(), "plotly must be inlined"
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["trials_to_reach_baseline"] == 1
    assert "s-random" in (tmp_path / "rep" / "summary.md").read_text()
    open_in_chromium(page, tmp_path)
    assert (tmp_path / "rep" / "pareto.png").exists()


def test_mismatched_baseline_is_refused(filled, tmp_path, tiny_model, dataset_file, capsys):
    url, _ = filled
    other = _spec(tmp_path, tiny_model, dataset_file, training={"max_steps": 3})
    autotune.create_study("other", other, url)
    assert main(["report", "s", "--baseline", "other", "--storage", url]) == 2
    assert "they differ in training.max_steps (2 against 3)" in capsys.readouterr().err
    with pytest.raises(autotune.AutotuneError, match="cannot be a baseline of 's': they differ in training.max_steps"):
        autotune.create_study("other-2", other, url, like="s")


def test_report_and_export_need_complete_trials(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    autotune.create_study("empty", _spec(tmp_path, tiny_model, dataset_file), sqlite_url)
    assert main(["report", "empty", "--storage", sqlite_url]) == 2
    assert "has no complete trial yet" in capsys.readouterr().err
    assert main(["export", "empty", "--storage", sqlite_url]) == 2
    assert "no complete feasible trial" in capsys.readouterr().err
    assert main(["report", "nope", "--storage", sqlite_url]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pick", "trials"),
    [
        ("pareto", [0, 1, 2]),
        ("knee", [1]),
        ("min:eval_loss", [2]),
        ("max:tokens_per_s", [0]),
        ("budget:train_time_s<=25", [1]),
        ("trial:2", [2]),
    ],
)
def test_export_round_trip(filled, tmp_path, pick, trials):
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import SFTConfig

    url, _ = filled
    out = tmp_path / "best.yaml"
    assert main(["export", "s", "--pick", pick, "--out", str(out), "--storage", url]) == 0
    entries = yaml.safe_load(out.read_text())
    assert [e["trial"] for e in entries] == trials
    for entry in entries:
        lora = LoraConfig(**entry["lora_config"])
        assert lora.r == entry["params"]["lora_r"]
        sft = SFTConfig(**{**entry["sft_config"], "output_dir": str(tmp_path / "out"), "use_cpu": True})
        assert sft.learning_rate == entry["params"]["learning_rate"]
        assert sft.bf16 and "use_cpu" not in entry["sft_config"]
        quantization = BitsAndBytesConfig(**entry["quantization_config"])
        assert quantization.load_in_4bit and str(quantization.bnb_4bit_compute_dtype) == "torch.bfloat16"
        assert entry["reproduce"]["seed"] == 42 and entry["metrics"]["eval_loss"] > 0


@pytest.mark.parametrize("kind", [{"kind": "zdt1"}, {"kind": "tabular", "table": "table.json"}])
def test_export_of_a_study_that_trained_nothing(tmp_path, sqlite_url, kind):
    write_table(tmp_path / "table.json")
    spec = write_spec(tmp_path / "z.yaml", {"trial": kind, "sampler": {"name": "random"}, "budget": {"n_trials": 4}})
    assert main(["study", "create", "z", "--config", str(spec), "--storage", sqlite_url]) == 0
    assert main(["worker", "z", "--storage", sqlite_url]) == 0
    out = tmp_path / "best.yaml"
    assert main(["export", "z", "--pick", "knee", "--out", str(out), "--storage", sqlite_url]) == 0
    (entry,) = yaml.safe_load(out.read_text())
    assert set(entry["params"]) == {"lora_r", "lora_alpha", "learning_rate"} and entry["metrics"]["eval_loss"] > 0
    assert ("grid_point" in entry) is (kind["kind"] == "tabular")


def test_failed_configs_and_unfinished_rows_stay_out_of_the_numbers(filled):
    url, spec = filled
    before, _ = autotune.build_report("s", url)
    study = optuna.load_study(study_name="s", storage=url)
    # A config that failed, told with penalty values (worst seen) as the worker tells it.
    _add(study, spec, 8, 1e-2, 3.5, 35.0, failure_reason="CUDA OOM", failure_kind="config")
    for kind in ("surplus", "interrupted"):  # rows that never used the budget
        trial = study.ask()
        trial.set_user_attr("failure_kind", kind)
        trial.set_user_attr("failure_reason", kind)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    after, _ = autotune.build_report("s", url)
    assert [p.number for p in after.study.trials] == [0, 1, 2, 3]
    assert after.study.budget_trials == [0, 1, 2, 3, 4]
    assert after.hypervolume["s"] == pytest.approx(before.hypervolume["s"] + before.hypervolume["s"][-1:])
    assert after.importances == before.importances
    assert after.study.failures == {"CUDA OOM": 1, "interrupted": 1}


def test_export_errors(filled, capsys):
    url, _ = filled
    for pick, message in [
        ("best", "unknown --pick 'best'"),
        ("min:loss", "unknown metric 'loss'"),
        ("budget:train_time_s<=1", "no trial has train_time_s <= 1"),
    ]:
        assert main(["export", "s", "--pick", pick, "--storage", url]) == 2
        assert message in capsys.readouterr().err


def test_pilot_trials_are_run_once_and_copied_into_the_baseline(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    spec_file = write_spec(
        tmp_path / "s.yaml", small_spec(tiny_model, dataset_file, sampler={"name": "tpe", "n_pilot_trials": 3})
    )
    assert main(["study", "create", "a", "--config", str(spec_file), "--storage", sqlite_url]) == 0
    assert main(["study", "create", "a-random", "--like", "a", "--sampler", "random", "--storage", sqlite_url]) == 2
    assert "has 3 pilot trials not yet run" in capsys.readouterr().err
    study, spec = autotune.load_study("a", sqlite_url)
    for _ in range(3):  # what a worker does with the queued pilot configs
        trial = study.ask()
        spec.search_space.suggest(trial)
        study.tell(trial, [trial.params["learning_rate"], float(trial.params["lora_r"])])
    assert main(["study", "create", "a-random", "--like", "a", "--sampler", "random", "--storage", sqlite_url]) == 0
    copied = optuna.load_study(study_name="a-random", storage=sqlite_url).get_trials()
    assert [(t.params, t.values) for t in copied] == [(t.params, t.values) for t in study.get_trials()]
    assert autotune.load_study("a-random", sqlite_url)[1].sampler.name == "random"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_studies_with_the_report_figures(filled):
    url, _ = filled
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "autotune", "dashboard", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard did not answer"
        by_name = {s["study_name"]: s for s in studies}
        assert set(by_name) == {"s", "s-random"}
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{by_name['s']['study_id']}", timeout=10
        ) as response:
            detail = json.load(response)
        assert detail["objective_names"] == ["eval_loss", "train_time_s"]
        assert len(detail["trials"]) == 4
        assert {g["id"] for g in detail["plotly_graph_objects"]} == {
            "autotune-front-0",
            "autotune-hypervolume",
            "autotune-hypervolume-time",
        }
    finally:
        server.terminate()
        server.wait(timeout=10)

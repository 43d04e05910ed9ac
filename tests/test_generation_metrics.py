"""Generation metrics and the user's own metric functions: measured on completions of held-out
prompts by the trained adapter, at the end and at early stopping's rungs, recorded and shown
like the built-in metrics; a broken function fails its trials without spending the budget."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import autotune
from autotune._report import build_report
from autotune.cli import main
from autotune.objectives import BUILT_IN, GenerationSpec, MetricSpec, generate, held_out_prompts, load_base
from autotune.objectives._train import train_adapter
from autotune.storage import spent_budget

from conftest import small_spec, trial_config, write_jsonl, write_spec

# Each call returns 1 / (the number of calls so far), counted in a file beside it: the first
# trial's rung scores 1, its end 1/2, the next trial's rung 1/3.
COUNTING = """
from pathlib import Path

def score(predictions, references, prompts):
    calls = Path(__file__).with_name("calls.txt")
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    assert len(predictions) == len(references) == len(prompts) == 4
    return 1.0 / len(calls.read_text())
"""
FAILING = """
def score(predictions, references, prompts):
    raise ValueError("no judge for " + str(len(predictions)) + " answers")
"""


def test_built_in_metrics_normalise_as_documented():
    exact_match, rouge_l, json_valid = BUILT_IN["exact_match"], BUILT_IN["rouge_l"], BUILT_IN["json_valid"]
    assert exact_match(["  The\n  Answer ", "42."], ["the answer", "42"], ["p", "q"]) == 0.5
    assert rouge_l(["the cat sat", "a dog"], ["the cat sat down", "a dog"], ["p", "q"]) == pytest.approx(
        (2 * 3 / 7 + 1) / 2
    )
    assert json_valid([' {"a": 1} ', "{'a': 1}", "[1, 2]", "yes"], ["", "", "", ""], ["", "", "", ""]) == 0.5


def test_a_generation_metric_is_measured_with_the_trained_adapter(tmp_path, tiny_model):
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": "yes"} for i in range(40)]
    # 40 steps: 10 learnt it with one CPU's kernels and not another's (AVX2, AVX512-BF16);
    # 40 learn it in float32 and bfloat16 on both.
    config = trial_config(
        tiny_model, write_jsonl(tmp_path / "yes.jsonl", rows), {"max_steps": 40, "warmup_steps": 0}, learning_rate=1e-2
    ).model_copy(
        update={
            "metrics": [MetricSpec(name="exact_match")],
            "generation": GenerationSpec(max_new_tokens=4, num_examples=4),
        }
    )
    base = load_base(config)
    prompts = held_out_prompts(base.data.eval, base.tokenizer, 4)
    before = generate(base.model, base.tokenizer, prompts.input_ids, 4, batch_size=3)
    result = train_adapter(base, config)
    assert BUILT_IN["exact_match"](before, prompts.references, prompts.prompts) == 0.0
    assert result["metrics"]["exact_match"] == 1.0  # it learnt to answer "yes"
    assert result["metrics"]["eval_time_s"] > 0
    assert result["metrics"]["eval_time_s"] <= result["info"]["timings"]["eval_s"]


def _create(tmp_path: Path, url: str, spec: dict) -> int:
    return main(["study", "create", "g", "--config", str(write_spec(tmp_path / "g.yaml", spec)), "--storage", url])


def test_a_user_function_as_objective_ranks_at_rungs_and_is_shown(
    tmp_path, capsys, tiny_model, dataset_file, sqlite_url
):
    (tmp_path / "my_evals.py").write_text(COUNTING)
    spec = small_spec(
        tiny_model,
        dataset_file,
        metrics=[{"name": "my_score", "function": "my_evals.py:score", "direction": "maximize"}, {"name": "rouge_l"}],
        generation={"max_new_tokens": 2, "num_examples": 4},
        objectives=[{"metric": "my_score"}],
        early_stopping={"min_steps": 1, "reduction_factor": 3},
        budget={"n_trials": 7},
        training={"max_steps": 3},
    )
    assert _create(tmp_path, sqlite_url, spec) == 0
    assert main(["worker", "g", "--storage", sqlite_url]) == 0
    first, *_, last = trials = optuna.load_study(study_name="g", storage=sqlite_url).get_trials()
    # Trial n scores 1/(2n+1) at its rung and 1/(2n+2) at the end. The rung stops nothing until
    # 5 trials have completed; trial 5 never stops (with one rung, every second trial does not);
    # trial 6's 1/13 is beaten there.
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6 + ["PRUNED"]
    assert first.values == [0.5] and first.user_attrs["rungs"][0]["values"] == [1.0]
    assert [p["my_score"] for p in first.user_attrs["learning_curve"]] == [1.0, 0.5]
    assert last.user_attrs["stopped_at_step"] == 1
    assert last.user_attrs["metrics"]["my_score"] == pytest.approx(1 / 13)
    assert first.user_attrs["metrics"]["eval_time_s"] > 0
    assert first.user_attrs["timings"]["train_s"] == first.user_attrs["metrics"]["train_time_s"]

    capsys.readouterr()
    assert main(["study", "show", "g", "--storage", sqlite_url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["objectives"] == ["my_score"] and shown["pareto"][0]["metrics"]["my_score"] == 0.5
    assert shown["measured"] == ["rouge_l"]  # a metric of the spec that is no objective: shown beside
    rouge_l = shown["pareto"][0]["metrics"]["rouge_l"]
    assert main(["study", "show", "g", "--storage", sqlite_url]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "params" in line)
    assert header.index("my_score") < header.index("rouge_l")
    assert main(["export", "g", "--storage", sqlite_url, "--pick", "max:my_score", "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["trial"] == 0 and entry["metrics"]["my_score"] == 0.5
    report, _ = build_report("g", sqlite_url)
    assert report.metric_names == ["my_score"]
    assert report.study.pareto[0].metrics == {"my_score": 0.5, "rouge_l": rouge_l}
    assert "<th>rouge_l</th>" in autotune.report("g", sqlite_url, out=tmp_path / "report")["html"].read_text()


def test_a_failing_function_fails_its_trials_spends_no_budget_and_stops_the_worker(
    tmp_path, capsys, tiny_model, dataset_file, sqlite_url
):
    (tmp_path / "judge.py").write_text(FAILING)
    spec = small_spec(
        tiny_model,
        dataset_file,
        metrics=[{"name": "judged", "function": "judge.py:score", "direction": "maximize"}],
        generation={"max_new_tokens": 2, "num_examples": 4},
        objectives=[{"metric": "judged"}, {"metric": "train_time_s"}],
        training={"max_steps": 1},
    )
    assert _create(tmp_path, sqlite_url, spec) == 0
    capsys.readouterr()
    assert main(["worker", "g", "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "metric judged (" in err[0] and "ValueError: no judge for 4 answers (twice in a row" in err[0]
    trials = optuna.load_study(study_name="g", storage=sqlite_url).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # not told as a failed config (COMPLETE, penalised)
    for trial in trials:
        assert trial.user_attrs["failure_kind"] == "metric"
        assert "raised ValueError: no judge for 4 answers" in trial.user_attrs["failure_reason"]
        assert not spent_budget(trial)

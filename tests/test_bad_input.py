"""Every bad input gets one line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.cli import main
from autotune.objectives import load_table

from conftest import small_spec, write_jsonl, write_spec, write_table


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autotune: error: ")
    return lines[0]


def _nothing_written(url: str) -> None:
    assert optuna.get_all_study_names(url) == []


def _spec_with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, key = path.split(".")
    node = base
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    return base


BAD_SPECS = [
    ("search_space.lora_rank", {"low": 4, "high": 8}, "unknown key 'lora_rank' in search_space"),
    ("search_space.lora_r", {"low": 0, "high": 8}, "lora_r"),
    ("search_space.lora_r", {"low": 16, "high": 8}, "low (16) is above high (8); swap them"),
    ("search_space.learning_rate", {"low": 0, "high": 1e-3}, "learning_rate"),
    ("search_space.learning_rate", -1e-4, "greater than 0"),
    ("objectives", [{"metric": "eval_los"}], "unknown metric 'eval_los'; choose from eval_loss"),
    ("objectives", [{"metric": "eval_loss", "direction": "down"}], "objectives.0.direction"),
    ("sampler.name", "cmaes", "sampler.name"),
    ("constraints", ["peak_mem_gb < 20"], "should read like 'peak_mem_gb <= 20'"),
    ("budget.n_trials", 0, "budget.n_trials"),
    ("enqueue_trials", [{"lora_rank": 8}], "unknown hyperparameter 'lora_rank'"),
    ("trial.kind", "zdt3", "unknown trial kind 'zdt3'; choose qlora, zdt1, dtlz2 or tabular (with table: FILE)"),
    ("trial", {"kind": "tabular"}, "missing required key 'trial.table'"),
    ("trial", {"kind": "tabular", "table": "no/such.json"}, "no table at 'no/such.json'; make one with benchmarks"),
    ("trial.kind", "tabular:no/such.json", "unknown trial kind 'tabular:no/such.json'; choose qlora, zdt1, dtlz2 or"),
    ("early_stopping", {"min_steps": 2}, "early_stopping.min_steps (2) must be below training.max_steps (2)"),
    ("early_stopping", {"min_steps": 1, "reduction_factor": 1}, "early_stopping.reduction_factor"),
    ("early_stopping", {"reduction_factor": 3}, "missing required key 'early_stopping.min_steps'"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_SPECS)
def test_bad_spec_values(tmp_path, capsys, tiny_model, dataset_file, sqlite_url, path, value, expected):
    spec = write_spec(tmp_path / "s.yaml", _spec_with(small_spec(tiny_model, dataset_file), path, value))
    line = _run(capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url])
    assert expected in line
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_malformed_yaml(tmp_path, capsys, sqlite_url):
    spec = tmp_path / "s.yaml"
    spec.write_text("model: x\ndataset: [unclosed\n")
    assert "malformed YAML at line" in _run(
        capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]
    )


def test_missing_spec_file(tmp_path, capsys, sqlite_url):
    line = _run(capsys, ["study", "create", "s", "--config", str(tmp_path / "nope.yaml"), "--storage", sqlite_url])
    assert "cannot read spec" in line


def test_unfinished_table(tmp_path, capsys, sqlite_url):
    table = write_table(tmp_path / "table.json")
    data = json.loads(table.read_text())
    data["rows"] = data["rows"][:-1]  # as a stopped benchmarks/tabular_grid.py leaves it
    table.write_text(json.dumps(data))
    spec = write_spec(
        tmp_path / "s.yaml", {"trial": {"kind": "tabular", "table": str(table)}, "budget": {"n_trials": 2}}
    )
    line = _run(capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url])
    assert "misses 1 grid points; finish it with benchmarks/tabular_grid.py" in line
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_worker_without_the_table(tmp_path, capsys, sqlite_url):
    table = write_table(tmp_path / "table.json")
    spec = write_spec(
        tmp_path / "s.yaml", {"trial": {"kind": "tabular", "table": str(table)}, "budget": {"n_trials": 2}}
    )
    assert main(["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]) == 0
    table.unlink()  # a worker's machine that lacks the file: a fresh process, no cached table
    load_table.cache_clear()
    assert main(["study", "list", "--storage", sqlite_url]) == 0
    capsys.readouterr()
    assert f"no table at '{table}'" in _run(capsys, ["worker", "s", "--storage", sqlite_url])
    assert optuna.load_study(study_name="s", storage=sqlite_url).trials == []


def test_missing_required_key(tmp_path, capsys, dataset_file, sqlite_url):
    spec = write_spec(tmp_path / "s.yaml", {"dataset": {"path": str(dataset_file)}, "budget": {"n_trials": 2}})
    assert "missing required key 'model'" in _run(
        capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]
    )


def test_unknown_model_folder(tmp_path, capsys, dataset_file, sqlite_url):
    spec = write_spec(tmp_path / "s.yaml", small_spec(tmp_path / "no-such-model", dataset_file))
    assert "does not exist" in _run(capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ([{"question": "q", "answer": "a"}], "cannot tell the layout"),
    ],
)
def test_bad_dataset_file(tmp_path, capsys, tiny_model, sqlite_url, content, expected):
    data = tmp_path / "data.jsonl"
    if content == "":
        data.write_text("")
    elif content is not None:
        write_jsonl(data, content)
    spec = write_spec(tmp_path / "s.yaml", small_spec(tiny_model, data))
    assert expected in _run(capsys, ["study", "create", "s", "--config", str(spec), "--storage", sqlite_url])
    _nothing_written(sqlite_url)


def test_dataset_lacks_named_column(tmp_path, capsys, tiny_model, sqlite_url):
    data = write_jsonl(tmp_path / "data.jsonl", [{"instruction": "q", "output": "a"}])
    spec = small_spec(tiny_model, data)
    spec["dataset"].update(format="dolly")
    line = _run(
        capsys,
        ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url],
    )
    assert "lacks column(s) response needed by format dolly" in line
    _nothing_written(sqlite_url)


def test_existing_study_name(tmp_path, capsys, tiny_model, dataset_file, sqlite_url):
    spec = str(write_spec(tmp_path / "s.yaml", small_spec(tiny_model, dataset_file)))
    assert main(["study", "create", "s", "--config", spec, "--storage", sqlite_url]) == 0
    assert "already exists" in _run(capsys, ["study", "create", "s", "--config", spec, "--storage", sqlite_url])
    # Asked to keep it, with the same spec: fine.
    assert main(["study", "create", "s", "--config", spec, "--storage", sqlite_url, "--skip-if-exists"]) == 0


def test_unreachable_storage_masks_password(tmp_path, capsys, tiny_model, dataset_file):
    spec = str(write_spec(tmp_path / "s.yaml", small_spec(tiny_model, dataset_file)))
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/db"
    line = _run(capsys, ["study", "create", "s", "--config", spec, "--storage", url])
    assert "cannot use storage postgresql+psycopg://alice:***@127.0.0.1:1/db" in line
    assert "s3cret-pw" not in line


def test_worker_for_missing_study(capsys, sqlite_url):
    line = _run(capsys, ["worker", "nope", "--storage", sqlite_url])
    assert "no study named 'nope'" in line and "autotune study create nope" in line


@pytest.mark.parametrize(
    ("name", "content"), [("d.json", '[{"text": "a"}, {"text": '), ("d.jsonl", '{"text": "a"}\n{"text"\n')]
)
def test_malformed_json_dataset_is_one_line(tmp_path, capfd, tiny_model, sqlite_url, name, content):
    data = tmp_path / name
    data.write_text(content)
    spec = write_spec(tmp_path / "s.yaml", small_spec(tiny_model, data))
    assert main(["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]) == 2
    out, err = capfd.readouterr()
    (line,) = err.strip().splitlines()  # the parser's own log line is not printed too
    assert line.startswith(f"autotune: error: cannot read dataset file {data}: ") and not out
    assert "An error occurred while generating the dataset" not in line, "the parser's reason, not the wrapper's"
    _nothing_written(sqlite_url)


def test_early_stopping_needs_a_step_budget(tmp_path, capsys, tiny_model, dataset_file, sqlite_url):
    spec = small_spec(tiny_model, dataset_file, early_stopping={"min_steps": 1})
    spec["training"]["max_steps"] = None
    line = _run(
        capsys,
        ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url],
    )
    assert "early_stopping needs training.max_steps: its rungs are steps" in line
    _nothing_written(sqlite_url)


def test_early_stopping_on_a_table_needs_its_learning_curves(tmp_path, capsys, sqlite_url):
    write_table(tmp_path / "table.json")  # curves at steps 1 and 3
    spec = {
        "trial": {"kind": "tabular", "table": "table.json"},
        "budget": {"n_trials": 4},
        "training": {"max_steps": 4},
        "early_stopping": {"min_steps": 2},
    }
    line = _run(
        capsys,
        ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url],
    )
    assert "early stopping at steps 2, 4 needs the table's learning curves there (it has them at steps 1, 3)" in line
    _nothing_written(sqlite_url)


def _zdt1_study(tmp_path: Path, url: str, trial: dict[str, Any] | None = None) -> None:
    spec = {"trial": trial or {"kind": "zdt1", "noise": 0.1}, "budget": {"n_trials": 3}}
    assert main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", url]) == 0


def _trial_count(url: str) -> int:
    return len(optuna.load_study(study_name="s", storage=url).trials)


def test_verify_a_study_with_no_complete_trial(tmp_path, capsys, sqlite_url):
    _zdt1_study(tmp_path, sqlite_url)
    line = _run(capsys, ["verify", "s", "--storage", sqlite_url])
    assert "study 's' has no complete feasible trial yet; run a worker first: autotune worker s" in line
    assert _trial_count(sqlite_url) == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seeds", "1"], "--seeds must be at least 2 (a standard deviation needs two runs), got 1"),
        (["--pick", "budget:train_time_s<=-1"], "no trial has train_time_s <= -1 (the lowest is"),
        (["--pick", "trial:99"], "study 's' has no complete feasible trial 99; see: autotune study show s"),
        (["--pick", "best"], "unknown --pick 'best'; use pareto | knee"),
    ],
)
def test_verify_bad_seeds_or_a_pick_that_matches_nothing(tmp_path, capsys, sqlite_url, argv, expected):
    _zdt1_study(tmp_path, sqlite_url)
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert expected in _run(capsys, ["verify", "s", *argv, "--storage", sqlite_url])
    assert _trial_count(sqlite_url) == 3  # nothing queued


def test_verify_a_table_replay(tmp_path, capsys, sqlite_url):
    write_table(tmp_path / "table.json")
    _zdt1_study(tmp_path, sqlite_url, trial={"kind": "tabular", "table": "table.json"})
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    line = _run(capsys, ["verify", "s", "--storage", sqlite_url])
    assert "replays a table of runs, one seed per config: there is nothing to train again" in line


def test_export_verified_before_any_verification(tmp_path, capsys, sqlite_url):
    _zdt1_study(tmp_path, sqlite_url)
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    line = _run(capsys, ["export", "s", "--verified", "--storage", sqlite_url])
    assert "none of the trials that --pick pareto chooses is verified yet; run: autotune verify s --pick pareto" in line


_SCORE = "def score(predictions, references, prompts):\n    return 1.0\n"
_GENERATION = {"max_new_tokens": 2, "num_examples": 4}
BAD_METRICS = [
    (
        {"name": "s", "function": "missing.py:score", "direction": "maximize"},
        _SCORE,
        "missing.py:score: no file missing.py",
    ),
    ({"name": "s", "function": "evals.py:score", "direction": "maximize"}, "import no_such_lib\n", "cannot import"),
    ({"name": "s", "function": "no_such_pkg.evals:score", "direction": "maximize"}, _SCORE, "No module named"),
    ({"name": "s", "function": "evals.py:judge", "direction": "maximize"}, _SCORE, "has no function judge"),
    ({"name": "s", "function": "evals.py:score", "direction": "maximize"}, "def score(a):\n    return 1\n", "keywords"),
    ({"name": "s", "function": "evals.py:score"}, _SCORE, "metrics.0: metric 's': give its direction"),
    ({"name": "eval_loss", "function": "evals.py:score", "direction": "minimize"}, _SCORE, "built-in metric"),
    ({"name": "rouge_l", "function": "evals.py:score", "direction": "maximize"}, _SCORE, "built-in metric"),
    ({"name": "bleu"}, _SCORE, "no built-in metric 'bleu'; choose from exact_match, rouge_l, json_valid"),
]


@pytest.mark.parametrize(("metric", "source", "expected"), BAD_METRICS)
def test_bad_metric_function(tmp_path, capsys, tiny_model, dataset_file, sqlite_url, metric, source, expected):
    (tmp_path / "evals.py").write_text(source)
    spec = small_spec(tiny_model, dataset_file, metrics=[metric], generation=_GENERATION)
    line = _run(
        capsys,
        ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url],
    )
    assert expected in line
    _nothing_written(sqlite_url)


@pytest.mark.parametrize(
    ("overrides", "rows", "expected"),
    [
        ({"objectives": [{"metric": "exact_matc"}]}, None, "objectives.0.metric: unknown metric 'exact_matc'"),
        ({"constraints": ["rouge_l >= 0.5"]}, None, "constraints.0: unknown metric 'rouge_l'"),
        ({"trial": {"kind": "zdt1"}}, None, "trial kind zdt1 generates no text"),
        ({}, [{"text": f"line {i}"} for i in range(40)], "(text layout) has none; use a layout with prompts"),
        ({"generation": {"num_examples": 5}}, None, "generation.num_examples (5) is above the held-out split's 4"),
    ],
)
def test_bad_generation_setting(tmp_path, capsys, tiny_model, dataset_file, sqlite_url, overrides, rows, expected):
    data = write_jsonl(tmp_path / "text.jsonl", rows) if rows else dataset_file
    spec = small_spec(tiny_model, data, metrics=[{"name": "exact_match"}], generation=_GENERATION)
    spec.update(overrides)
    line = _run(
        capsys,
        ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url],
    )
    assert expected in line
    _nothing_written(sqlite_url)


def test_worker_without_the_metric_function(tmp_path, capsys, tiny_model, dataset_file, sqlite_url):
    evals = tmp_path / "evals.py"
    evals.write_text(_SCORE)
    metric = {"name": "s", "function": "evals.py:score", "direction": "maximize"}
    spec = small_spec(tiny_model, dataset_file, metrics=[metric], generation=_GENERATION)
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    evals.unlink()  # a worker's machine that lacks the file
    capsys.readouterr()
    assert f"metric function {evals}:score: no file {evals}" in _run(capsys, ["worker", "s", "--storage", sqlite_url])
    assert optuna.load_study(study_name="s", storage=sqlite_url).trials == []

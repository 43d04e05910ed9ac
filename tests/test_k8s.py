"""docker/k8s/ checked offline (no cluster here): every manifest validates, strictly (no
field the API does not know), against the Kubernetes API's JSON schemas that the package
kubernetes-validate ships; the workers are an Indexed Job that runs `autotune worker` on
the study the create-study Job creates, one GPU a pod, the storage URL from the Secret;
the dashboard's Service reaches its Deployment's pods; and no credential is in a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.cli import build_parser

DOCKER = Path(__file__).parent.parent / "docker"
K8S = DOCKER / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
OLDEST = "1.29"  # podFailurePolicy is beta (on by default) from 1.26 and GA from 1.31
SECRET = {"name": "autotune-storage", "key": "AUTOTUNE_STORAGE"}


def _resources(path: Path) -> list[dict[str, Any]]:
    return [r for r in yaml.safe_load_all(path.read_text()) if r]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for p in MANIFESTS for r in _resources(p) if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _container(resource: dict[str, Any]) -> dict[str, Any]:
    (container,) = resource["spec"]["template"]["spec"]["containers"]
    return container


def _storage_from_the_secret(container: dict[str, Any]) -> None:
    (env,) = [e for e in container["env"] if e["name"] == "AUTOTUNE_STORAGE"]
    assert env == {"name": "AUTOTUNE_STORAGE", "valueFrom": {"secretKeyRef": SECRET}}


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} == {"workers.yaml", "create-study.yaml", "dashboard.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path):
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (the test extra provides it)"
    )
    bundled = {kv.utils.major_minor(v) for v in kv.utils.all_versions()}
    versions = [kv.latest_version()] + ([OLDEST] if OLDEST in bundled else [])
    for resource in _resources(path):
        for version in versions:
            try:
                kv.validate(resource, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                pytest.fail(f"{path.name}: {resource['kind']} against Kubernetes {version}: {where}: {exc.message}")


def test_workers_are_an_indexed_job_of_autotune_worker_one_gpu_each():
    job = _one("Job", "autotune-workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy needs it
    worker = _container(job)
    args = worker["args"]
    assert args[0] == "worker" and args[2:] == ["--gpus", "all"]
    build_parser().parse_args(args)  # exits, failing the test, on an unknown command or flag
    assert args[1] == _one("Job", "autotune-create-study")["spec"]["template"]["spec"]["containers"][0]["args"][2]
    assert worker["resources"]["limits"] == {"nvidia.com/gpu": 1}
    _storage_from_the_secret(worker)
    (exit_2,) = [r for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r]
    assert exit_2["action"] == "FailJob" and exit_2["onExitCodes"]["values"] == [2]
    assert exit_2["onExitCodes"]["containerName"] == worker["name"]


def test_create_study_reads_the_spec_from_its_configmap():
    job = _one("Job", "autotune-create-study")
    container = _container(job)
    args = container["args"]
    build_parser().parse_args(args)
    assert args[:2] == ["study", "create"] and "--skip-if-exists" in args
    config = Path(args[args.index("--config") + 1])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent)]
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "autotune-spec"
    _storage_from_the_secret(container)


def test_dashboard_deployment_and_service():
    deployment, service = _one("Deployment", "autotune-dashboard"), _one("Service", "autotune-dashboard")
    container = _container(deployment)
    args = container["args"]
    build_parser().parse_args(args)
    assert args[0] == "dashboard" and args[args.index("--host") + 1] == "0.0.0.0"
    (port,) = container["ports"]
    assert port["containerPort"] == int(args[args.index("--port") + 1])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert "nvidia.com/gpu" not in str(container.get("resources"))
    _storage_from_the_secret(container)


def test_the_image_is_the_one_docker_builds_and_no_credential_is_in_a_manifest():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    image = compose["x-autotune"]["image"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for path in MANIFESTS:
        text = path.read_text()
        assert "postgresql://" not in text and "password" not in text.lower(), path.name
        for resource in _resources(path):
            if "template" in resource.get("spec", {}):
                pod = resource["spec"]["template"]["spec"]
                assert _container(resource)["image"] == image
                assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    readme = (DOCKER / "README.md").read_text()
    assert f"kubectl create secret generic {SECRET['name']} --from-literal={SECRET['key']}=" in readme
    assert "kubectl create configmap autotune-spec --from-file=study.yaml=" in readme

"""The deployment files (deploy/): the compose stack as podman-compose reads it, and the Kubernetes manifests as
kustomize renders them, validated against the Kubernetes schemas and checked against the app they deploy: every
setting they name exists, the probes answer, the ports, labels and timeouts agree."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from app.config import Settings, SettingsError, load_settings
from tests.conftest import ROOT, Served, require, tool_path

KUBERNETES_VERSION = "1.32.0"
# Read by uvicorn, not by the app's settings.
SERVER_VARIABLES = {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
SETTINGS = set(Settings.__struct_fields__) | SERVER_VARIABLES
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def run(*command: str) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# ---------------------------------------------------------------- compose


def compose_config(*files: str) -> dict[str, Any]:
    require("podman-compose")
    podman_compose = tool_path("podman-compose")
    assert podman_compose
    command = [podman_compose, "--dry-run"]  # reads and merges the files only: no podman needed
    for file in files:
        command += ["-f", f"deploy/{file}"]
    config: dict[str, Any] = yaml.safe_load(run(*command, "config"))
    return config


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.dev.yaml"]])
@pytest.mark.system
def test_the_compose_stack_is_valid_and_wired_like_the_template(files: list[str]) -> None:
    services = compose_config(*files)["services"]
    assert {"db", "redis", "prestart", "backend", "proxy"} <= set(services)
    assert services["prestart"]["command"][-1] == "prestart"
    assert services["prestart"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["backend"]["depends_on"]["prestart"]["condition"] == "service_completed_successfully"
    assert "ports" not in services["backend"], "only the proxy is published"
    for name in ("prestart", "backend"):
        assert services[name]["env_file"] == ["../.env"]
        unknown = set(services[name]["environment"]) - SETTINGS
        assert not unknown, f"{name}: {unknown} are no settings of the app"
    if "compose.dev.yaml" in files:
        assert services["backend"]["environment"]["SMTP_HOST"] == "mailpit"
        assert services["mailpit"]["image"].endswith("axllent/mailpit:latest")
        assert services["backend"]["environment"]["ENVIRONMENT"] == "local"
    else:
        # .env's DATABASE_URL (the host's localhost) must not win over the stack's own database.
        assert services["backend"]["environment"]["DATABASE_URL"] == ""


def test_the_caddyfile_proxies_to_the_backend_and_checks_readiness() -> None:
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy backend:8000" in caddyfile
    assert "health_uri /api/v1/utils/ready" in caddyfile


# ---------------------------------------------------------------- Kubernetes


def rendered(overlay: str) -> list[dict[str, Any]]:
    require("kubectl")
    kubectl = tool_path("kubectl")
    assert kubectl
    return [document for document in yaml.safe_load_all(run(kubectl, "kustomize", f"deploy/k8s/{overlay}")) if document]


OVERLAYS = ["base", "overlays/production"]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [document for document in documents if document["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def containers(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = one(documents, kind)["spec"]["template"]["spec"]["containers"]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.system
def test_every_manifest_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    documents = rendered(overlay)
    kinds = {document["kind"] for document in documents}
    assert kinds == {
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.system
def test_the_settings_are_the_apps_and_the_placeholders_cannot_be_deployed(overlay: str) -> None:
    documents = rendered(overlay)
    config = one(documents, "ConfigMap")["data"]
    secret = one(documents, "Secret")["stringData"]
    assert not (set(config) | set(secret)) - SETTINGS
    assert not set(config) & set(secret)
    for kind in ("Deployment", "Job"):
        for container in containers(documents, kind):
            names = {
                source.get("configMapRef", source.get("secretRef", {})).get("name") for source in container["envFrom"]
            }
            assert names == {"accounts-api-config", "accounts-api-secrets"}
    app_settings = {name: value for name, value in {**config, **secret}.items() if name not in SERVER_VARIABLES}
    with pytest.raises(SettingsError, match="changethis"):
        load_settings(environ=app_settings, env_file=None)
    replaced = {
        **app_settings,
        "SECRET_KEY": "x" * 40,
        "POSTGRES_PASSWORD": "p" * 20,
        "FIRST_SUPERUSER_PASSWORD": "q" * 20,
    }
    settings = load_settings(environ=replaced, env_file=None)
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.system
def test_production_runs_as_production_with_the_released_image() -> None:
    documents = rendered("overlays/production")
    assert one(documents, "ConfigMap")["data"]["ENVIRONMENT"] == "production"
    assert (
        one(documents, "Deployment")["spec"]["replicas"]
        == one(documents, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    )
    for kind in ("Deployment", "Job"):
        for container in containers(documents, kind):
            assert re.fullmatch(r"[\w./-]+/accounts-api:[\w.-]+", container["image"]), container["image"]
    assert {document["metadata"]["namespace"] for document in documents} == {"accounts-api"}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.system
def test_the_pods_selectors_and_timeouts_agree(overlay: str) -> None:
    documents = rendered(overlay)
    deployment, job = one(documents, "Deployment"), one(documents, "Job")
    api_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in selector.items())

    for selector in (
        one(documents, "Service")["spec"]["selector"],
        one(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selects(selector, api_labels)
        assert not selects(selector, job_labels), "the migration pod must never receive traffic"
    assert one(documents, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "prestart"

    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    exposed = re.search(r"^EXPOSE (\d+)", CONTAINERFILE, re.MULTILINE)
    assert exposed is not None
    assert api["ports"][0]["containerPort"] == int(exposed.group(1))
    graceful = re.search(r'"--timeout-graceful-shutdown", "(\d+)"', CONTAINERFILE)
    assert graceful is not None
    pause = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + int(graceful.group(1))
    for spec in (pod, job["spec"]["template"]["spec"]):
        assert spec["securityContext"]["runAsNonRoot"] is True
        user = re.search(r"^USER (\d+)", CONTAINERFILE, re.MULTILINE)
        assert user is not None
        assert spec["securityContext"]["runAsUser"] == int(user.group(1))


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe", "startupProbe"])
@pytest.mark.system
def test_the_probes_answer_on_the_served_app(served: Served, probe: str) -> None:
    (api,) = containers(rendered("overlays/production"), "Deployment")
    path = api[probe]["httpGet"]["path"]
    assert api[probe]["httpGet"]["port"] == api["ports"][0]["name"]
    answer = httpx.get(served.url + path)
    assert answer.status_code == 200, (probe, path, answer.text)

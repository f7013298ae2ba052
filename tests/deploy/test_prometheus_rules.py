"""deploy/prometheus/alerts.yaml: valid for Prometheus (promtool), each alert fires on
its fault (alerts.test.yaml), and every metric, label and label value it reads is one
the service actually exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import Metrics
from bridge.store.base import AttemptOutcome, DestinationStatus, StoreStatus

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yaml"
SEVERITIES = {"info", "warning", "critical"}
# Added by Prometheus to every scraped series, and its own scrape-health series.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_SERIES = {"up": set[str]()}
DURATION = re.compile(r"^\d+[smhdwy]$")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "delta",
    "and", "or", "unless", "on", "ignoring", "offset", "bool", "absent", "max_over_time",
    "min_over_time",
}  # fmt: skip


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a Metrics with every series populated."""
    metrics = Metrics()
    metrics.request("accepted")
    metrics.leads(received=1, accepted=1)
    metrics.probe()
    metrics.delivery("crm", "dead")
    metrics.attempt_latency("crm", 0.1)
    metrics.unmapped("crm", ["first_name"])
    metrics.update_queue(
        StoreStatus(1, 0, 0, 0, [DestinationStatus("crm", {"pending": 1}, 0, 1.0)]), 2.0
    )
    metrics.paused("crm", 0.0)
    metrics.worker_running("crm", True)
    metrics.worker_restarted("crm")
    metrics.unmapped_provider_keys.set(1)
    out: dict[str, set[str]] = dict(PROMETHEUS_SERIES)
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def known_values() -> dict[tuple[str, str], set[str]]:
    """The values a label can take, read from where the service sets them."""
    intake = (ROOT / "bridge" / "intake.py").read_text()
    return {
        ("lead_bridge_deliveries_total", "outcome"): set(get_args(AttemptOutcome)),
        ("lead_bridge_webhook_requests_total", "outcome"): set(
            re.findall(r'metrics\.request\("([a-z_]+)"\)', intake)
        ),
    }


def test_every_rule_is_complete_and_named_once() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), names
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert DURATION.match(rule.get("for", "0s")), rule["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_rule_reads_only_exported_metrics_labels_and_values(rule: dict[str, Any]) -> None:
    series = exported()
    values = known_values()
    expr = re.sub(r"\[[^\]]*\]", "", rule["expr"])  # range selectors
    used: list[str] = []
    for name, matchers in SELECTOR.findall(expr):
        if name in PROMQL_WORDS or re.fullmatch(r"[0-9.e]+", name):
            continue
        if not matchers and (name.startswith(("by", "without")) or name in _grouped(expr)):
            continue
        assert name in series, f"{rule['alert']}: {name} is not exported by the service"
        used.append(name)
        for label, op, value in MATCHER.findall(matchers):
            assert label in series[name] | TARGET_LABELS, f"{rule['alert']}: {name} has no {label}"
            allowed = values.get((name, label))
            if allowed is not None:
                wanted = value.split("|") if op in ("=~", "!~") else [value]
                assert set(wanted) <= allowed, f"{rule['alert']}: {name}{{{label}}} {wanted}"
    assert used, rule["alert"]
    labels = set().union(*(series[name] for name in used)) | TARGET_LABELS
    for group in GROUPING.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in labels, f"{rule['alert']}: grouping by unknown label {label}"


def _grouped(expr: str) -> set[str]:
    return {x.strip() for group in GROUPING.findall(expr) for x in group.split(",")}


def test_docs_list_every_alert() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules():
        assert f"`{rule['alert']}`" in docs, rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yaml"],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr

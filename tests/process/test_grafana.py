"""examples/grafana-dashboard.json: valid JSON, and every query names real asgid metrics.

The metric names asgid exposes are taken from the exporter itself (rendered
with an empty store, no process needed), so a metric renamed in
``asgid/supervisor/_exporter.py`` without updating the dashboard fails here.
With ``promtool`` installed, every expression is also checked for PromQL syntax.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT
from prometheus_client.parser import text_string_to_metric_families

from asgid.supervisor._core import Supervisor, Timeouts
from asgid.supervisor._exporter import Exporter
from asgid.supervisor._store import MetricsStore

DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"

# PromQL functions and aggregations the dashboard may use, and its keywords.
FUNCTIONS = {
    "sum", "avg", "max", "min", "count", "topk", "bottomk", "rate", "irate", "increase",
    "histogram_quantile", "time", "clamp_min", "clamp_max", "max_over_time", "avg_over_time",
    "label_values", "deriv", "delta", "changes", "resets", "abs", "vector", "scalar",
}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
# What the dashboard must show, as a metric each panel's queries use.
REQUIRED = {
    "requests/s": "asgid_requests_total",
    "latency quantiles": "asgid_request_duration_seconds_bucket",
    "workers by state": "asgid_workers",
    "restarts by reason": "asgid_worker_restarts_total",
    "RSS per worker": "asgid_worker_memory_rss_bytes",
    "event-loop lag": "asgid_event_loop_lag_seconds_bucket",
}


def exposed_names() -> set[str]:
    """Every sample name asgid's own /metrics can carry."""
    exporter = Exporter(MetricsStore(), lambda: Supervisor(1, Timeouts()), "/nonexistent")
    body, _ = exporter.render("")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in text_string_to_metric_families(body.decode()):
        if family.name.startswith("asgid_"):
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL (or Grafana ``label_values``) expression."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"label_values\(([^,()]+),[^)]*\)", r"\1", text)  # label_values(m, label)
    names = set()
    for match in re.finditer(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", text):
        token = match.group()
        if text[match.end() :].lstrip().startswith("("):
            assert token in FUNCTIONS, f"unexpected function {token!r} in {expr!r}"
        elif token not in KEYWORDS and not re.fullmatch(r"\d.*|e\d*", token):
            names.add(token)
    return names


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = load()
    assert dashboard["title"] == "asgid"
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "table")
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids
        assert len(ref_ids) == len(set(ref_ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_query_names_only_metrics_asgid_exposes() -> None:
    known = exposed_names()
    assert "asgid_requests_total" in known
    used: set[str] = set()
    for expr in expressions(load()):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{expr!r} names {sorted(names - known)}, not exposed by asgid"
        used |= names
    for what, name in REQUIRED.items():
        assert name in used, f"the dashboard shows no {what} ({name})"
    quantiles = [e for e in expressions(load()) if "histogram_quantile" in e]
    assert any("0.5," in e for e in quantiles)
    assert any("0.99," in e for e in quantiles)
    assert any('code=~"5.."' in e for e in expressions(load())), "no error-rate query"


def test_the_name_check_catches_a_wrong_name() -> None:
    assert metric_names('sum by (code) (rate(asgid_request_total{job=~"$job"}[5m]))') == {
        "asgid_request_total"
    }
    assert "asgid_request_total" not in exposed_names()
    assert metric_names('label_values(asgid_build_info{job=~"$job"}, instance)') == {
        "asgid_build_info"
    }


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian/Ubuntu: apt-get install prometheus)")
    rules = []
    for index, expr in enumerate(e for e in expressions(load()) if "label_values" not in e):
        promql = expr.replace("$__rate_interval", "1m").replace("$job", ".*")
        rules.append(
            {"record": f"dashboard:query_{index}", "expr": promql.replace("$instance", ".*")}
        )
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr

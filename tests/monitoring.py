"""The monitoring files (Grafana dashboard, prometheus-adapter rules) and the Prometheus metric names their
PromQL queries read, for the unit tests (files) and the integration test (names against a live /metrics)."""

from __future__ import annotations

import json
import re

import yaml

from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "electra-qa.json"
ADAPTER_VALUES = ROOT / "deploy" / "k8s" / "prometheus-adapter" / "values.yaml"

# Metrics the dashboard reads that Triton exports only where it sees a GPU (collected through DCGM): the
# embedded test server runs on CPU, so its /metrics lacks them. Names from Triton's metrics documentation
# (GPU Metrics), the only exceptions allowed.
GPU_ONLY_METRICS = frozenset({"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"})

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (prometheus-adapter's <<...>> templates allowed)."""
    expr = re.sub(r"<<[^>]*>>", "", expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match.group())
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(board: dict | None = None) -> list[str]:
    """Every PromQL query of the dashboard: panel targets, and template variables' label_values() series."""
    board = board or dashboard()
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            queries.append(match.group(1) if match else query)
    return queries


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def adapter_queries() -> list[str]:
    return [q for rule in adapter_rules() for q in (rule["seriesQuery"], rule["metricsQuery"])]

"""Reading deploy/monitoring: the PromQL of the dashboard and the rules, and its metric names.

`metric_names_in_monitoring()` is the set of metric base names (as prometheus-client names
its metric families: a counter without `_total`, a histogram without `_bucket`, `_sum`,
`_count`) that the dashboard and the rules read, so that a test can compare it with what
the services export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

try:
    import promql_parser
    import yaml
except ImportError as error:  # pragma: no cover - depends on the machine
    raise ImportError(f"{error.name} is missing (a dev dependency): run `make install`") from error

ROOT = Path(__file__).resolve().parents[2]
MONITORING_DIR = ROOT / "deploy" / "monitoring"
DASHBOARD_PATH = MONITORING_DIR / "dashboard.json"
RULES_PATH = MONITORING_DIR / "rules.yml"
RULES_TEST_PATH = MONITORING_DIR / "rules_test.yml"
RUNBOOK_PATH = MONITORING_DIR / "runbook.md"

# Series that Prometheus makes itself: no service exports them.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

# Grafana's built-in variables, replaced by something of the right PromQL type.
DURATION_VARIABLES = frozenset({"__rate_interval", "__interval", "__range"})
NUMBER_VARIABLES = frozenset(
    {"__rate_interval_ms", "__interval_ms", "__range_s", "__range_ms", "__from", "__to"}
)
SUBSTITUTED_DURATION = "5m"
SUBSTITUTED_NUMBER = "300"

# $name, ${name}, ${name:format} and the deprecated [[name]] / [[name:format]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<expr>.*),\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.S
)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.S)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard or the rules."""

    where: str  # e.g. "panel 'Fan-out latency' target A" or "rule CollabEditorDown"
    raw: str  # as written, Grafana variables included
    expr: str  # parseable PromQL: variables replaced by `variable_placeholder`
    source: str  # "panel", "templating", "annotation", "alert" or "record"


def variable_placeholder(name: str) -> str:
    """What a dashboard variable such as $namespace becomes in a parseable expression."""
    return f"__var_{name}__"


def variables_in(text: str) -> set[str]:
    """Names of the Grafana variables an expression uses."""
    return {next(g for g in match.groups() if g) for match in _VARIABLE.finditer(text)}


def substitute_variables(text: str) -> str:
    """The expression with every Grafana variable replaced so that PromQL parses it."""

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in DURATION_VARIABLES:
            return SUBSTITUTED_DURATION
        if name in NUMBER_VARIABLES:
            return SUBSTITUTED_NUMBER
        return variable_placeholder(name)

    return _VARIABLE.sub(replace, text)


# The dashboard ---------------------------------------------------------------------------


@cache
def load_dashboard() -> dict[str, Any]:
    with DASHBOARD_PATH.open(encoding="utf-8") as handle:
        dashboard: dict[str, Any] = json.load(handle)
    return dashboard


def iter_panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included, in order."""
    for panel in container.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels that query a data source (everything but rows and text)."""
    return [p for p in iter_panels(dashboard) if p.get("type") not in ("row", "text")]


def template_query(variable: dict[str, Any]) -> str:
    """The query of a templating variable, whether stored as a string or an object."""
    query = variable.get("query", "")
    if isinstance(query, dict):
        query = query.get("query", "")
    return str(query)


def promql_of_template_query(query: str) -> str | None:
    """The PromQL inside a Prometheus variable query, None for queries without any."""
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        match = pattern.match(query)
        if match:
            return match.group("expr")
    # label_values(label), label_names(), metrics(regex): no PromQL expression.
    return None


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    """Every PromQL expression of the dashboard: panel targets, templating, annotations."""
    dashboard = dashboard if dashboard is not None else load_dashboard()
    queries: list[Query] = []
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            raw = target.get("expr")
            if raw:
                where = f"panel {panel.get('title')!r} target {target.get('refId')}"
                queries.append(Query(where, raw, substitute_variables(raw), "panel"))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        raw = promql_of_template_query(template_query(variable))
        if raw:
            where = f"variable {variable.get('name')!r}"
            queries.append(Query(where, raw, substitute_variables(raw), "templating"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        raw = annotation.get("expr")
        if raw:
            where = f"annotation {annotation.get('name')!r}"
            queries.append(Query(where, raw, substitute_variables(raw), "annotation"))
    return queries


# The rules -------------------------------------------------------------------------------


@cache
def load_rules() -> dict[str, Any]:
    with RULES_PATH.open(encoding="utf-8") as handle:
        rules: dict[str, Any] = yaml.safe_load(handle)
    return rules


@cache
def load_rules_tests() -> dict[str, Any]:
    with RULES_TEST_PATH.open(encoding="utf-8") as handle:
        tests: dict[str, Any] = yaml.safe_load(handle)
    return tests


def iter_rules(rules: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    rules = rules if rules is not None else load_rules()
    for group in rules.get("groups", []):
        yield from group.get("rules", [])


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in iter_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    """Series the recording rules create (not exported by any service)."""
    return {rule["record"] for rule in iter_rules() if "record" in rule}


def rule_queries() -> list[Query]:
    queries = []
    for rule in iter_rules():
        kind = "alert" if "alert" in rule else "record"
        expr = str(rule["expr"])
        queries.append(Query(f"{kind} {rule[kind]}", expr, expr, kind))
    return queries


# Metric names ----------------------------------------------------------------------------


def vector_selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector of an expression (inside range selectors too)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def selector_name(selector: promql_parser.VectorSelector) -> str | None:
    """The metric name of a selector, from `name{...}` or `{__name__="name"}`."""
    if selector.name:
        return str(selector.name)
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return str(matcher.value)
    return None


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression reads, as written (suffixes kept)."""
    return {name for s in vector_selectors(expr) if (name := selector_name(s)) is not None}


def base_name(name: str) -> str:
    """The metric family name of a series name: one counter or histogram suffix removed."""
    if name.endswith("_total"):
        return name.removesuffix("_total")
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def metric_names_in_monitoring() -> set[str]:
    """Base names of the exported metrics that the dashboard and the rules read.

    Series made by Prometheus itself (`up`, `ALERTS`) and by the recording rules are left
    out: what remains must appear in a scrape of the editor or the gateway.
    """
    recorded = recorded_names()
    names: set[str] = set()
    for query in [*dashboard_queries(), *rule_queries()]:
        for name in metric_names(query.expr):
            if name in recorded or name in PROMETHEUS_SERIES:
                continue
            names.add(base_name(name))
    return names

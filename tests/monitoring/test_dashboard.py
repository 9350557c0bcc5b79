"""The Grafana dashboard: valid PromQL everywhere, variables, data sources, units, filters."""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

from tests.monitoring.names import (
    DURATION_VARIABLES,
    NUMBER_VARIABLES,
    PROMETHEUS_SERIES,
    base_name,
    dashboard_queries,
    data_panels,
    iter_panels,
    load_dashboard,
    metric_names,
    metric_names_in_monitoring,
    promql_of_template_query,
    recorded_names,
    selector_name,
    substitute_variables,
    template_query,
    variable_placeholder,
    variables_in,
    vector_selectors,
)

DATASOURCE_REFS = {"${datasource}", "$datasource"}
REQUIRED_ROWS = {
    "Traffic",
    "Latency",
    "Errors and refusals",
    "Saturation",
    "Redis and database health",
    "Per-pod breakdown",
}
# Histograms whose p50/p95/p99 the Latency row shows.
LATENCY_HISTOGRAMS = {
    "collab_fanout_seconds",
    "collab_relay_seconds",
    "collab_db_append_seconds",
    "collab_gateway_dial_seconds",
    "collab_room_load_seconds",
}
JOB_MATCHERS = {".*editor.*", ".*gateway.*"}


def variables_by_name() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in load_dashboard()["templating"]["list"]}


def panel_id(panel: dict[str, Any]) -> str:
    return f"{panel.get('id')}-{panel.get('title')}"


def matchers(selector: promql_parser.VectorSelector) -> dict[str, tuple[Any, str]]:
    return {m.name: (m.op, m.value) for m in selector.matchers.matchers}


def test_dashboard_identity() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "collab-overview"
    assert dashboard["title"] == "Collab: collaborative editing"
    assert dashboard["schemaVersion"] == 39


def test_datasource_variable() -> None:
    variable = variables_by_name()["datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


@pytest.mark.parametrize(("name", "metric"), [("namespace", "collab_connections"), ("pod", "up")])
def test_query_variables(name: str, metric: str) -> None:
    variable = variables_by_name()[name]
    assert variable["type"] == "query"
    assert variable["datasource"]["uid"] in DATASOURCE_REFS
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    query = template_query(variable)
    assert query.startswith("label_values(")
    assert query.rstrip().endswith(f", {name})")
    promql = promql_of_template_query(query)
    assert promql is not None
    assert metric_names(substitute_variables(promql)) == {metric}


def test_rows() -> None:
    rows = {p["title"] for p in iter_panels(load_dashboard()) if p["type"] == "row"}
    assert rows >= REQUIRED_ROWS, REQUIRED_ROWS - rows


def test_panel_ids_are_unique_and_placed() -> None:
    panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel_id(panel)
        assert grid["x"] + grid["w"] <= 24, panel_id(panel)


def test_every_query_parses() -> None:
    queries = dashboard_queries()
    assert len(queries) > 50
    failures = []
    for query in queries:
        try:
            promql_parser.parse(query.expr)
        except ValueError as error:
            failures.append(f"{query.where}: {error}\n    {query.raw}")
    assert not failures, "\n".join(failures)


def test_every_variable_used_is_defined() -> None:
    defined = set(variables_by_name()) | DURATION_VARIABLES | NUMBER_VARIABLES
    undefined = {
        f"{query.where}: ${name}"
        for query in dashboard_queries()
        for name in variables_in(query.raw)
        if name not in defined
    }
    assert not undefined, sorted(undefined)


@pytest.mark.parametrize("panel", data_panels(load_dashboard()), ids=panel_id)
def test_panel_uses_the_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel.get("datasource", {}).get("uid") in DATASOURCE_REFS
    assert panel["datasource"].get("type") == "prometheus"
    assert panel.get("targets"), "a panel without queries"
    for target in panel["targets"]:
        if "datasource" in target:
            assert target["datasource"].get("uid") in DATASOURCE_REFS


@pytest.mark.parametrize("panel", data_panels(load_dashboard()), ids=panel_id)
def test_panel_has_title_description_and_unit(panel: dict[str, Any]) -> None:
    assert panel.get("title", "").strip()
    assert len(panel.get("description", "")) > 20
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit")
    assert unit, "no unit"
    if unit == "none":  # only states shown through value mappings
        assert defaults.get("mappings"), "unit none on a panel that plots a quantity"


def test_panel_queries_filter_on_namespace_pod_and_job() -> None:
    problems = []
    for query in dashboard_queries():
        if query.source != "panel":
            continue
        for selector in vector_selectors(query.expr):
            found = matchers(selector)
            for label in ("namespace", "pod"):
                expected = (promql_parser.MatchOp.Re, variable_placeholder(label))
                if found.get(label) != expected:
                    problems.append(f"{query.where}: {selector} does not filter {label}")
            job = found.get("job")
            if job is None or job[1] not in JOB_MATCHERS:
                problems.append(f"{query.where}: {selector} selects no editor/gateway job")
    assert not problems, "\n".join(problems)


def test_other_queries_filter_on_namespace() -> None:
    for query in dashboard_queries():
        if query.source == "templating" and "namespace" not in variables_in(query.raw):
            continue  # the namespace variable itself lists every namespace
        if query.source == "panel":
            continue
        for selector in vector_selectors(query.expr):
            assert matchers(selector).get("namespace") == (
                promql_parser.MatchOp.Re,
                variable_placeholder("namespace"),
            ), query.where


def test_panel_rates_use_the_rate_interval() -> None:
    hard_coded = [
        f"{q.where}: {q.raw}"
        for q in dashboard_queries()
        if q.source == "panel" and re.search(r"\[\d+[smhdw]", q.raw)
    ]
    assert not hard_coded, "\n".join(hard_coded)


def quantiles_of(expr: str) -> list[tuple[float, str, list[str]]]:
    """(quantile, histogram, aggregation labels) of each histogram_quantile of an expression."""
    found: list[tuple[float, str, list[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            quantile, inner = node.args
            assert isinstance(quantile, promql_parser.NumberLiteral), expr
            assert isinstance(inner, promql_parser.AggregateExpr), expr
            modifier = inner.modifier
            assert modifier is not None, expr
            assert modifier.type == promql_parser.AggModifierType.By, expr
            rate = inner.expr
            assert isinstance(rate, promql_parser.Call) and rate.func.name == "rate", expr
            (selector,) = vector_selectors(rate.prettify())
            name = selector_name(selector)
            assert name is not None and name.endswith("_bucket"), expr
            found.append((float(quantile.val), base_name(name), list(modifier.labels)))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_histogram_quantiles_sum_rates_of_buckets_by_le() -> None:
    seen = False
    for query in dashboard_queries():
        for _quantile, _metric, labels in quantiles_of(query.expr):
            seen = True
            assert "le" in labels, query.where
            assert "[$__rate_interval]" in query.raw, query.where
    assert seen


def test_latency_row_shows_p50_p95_p99() -> None:
    shown: dict[str, set[float]] = {}
    for query in dashboard_queries():
        for quantile, metric, _labels in quantiles_of(query.expr):
            shown.setdefault(metric, set()).add(quantile)
    for metric in LATENCY_HISTOGRAMS:
        assert {0.5, 0.95, 0.99} <= shown.get(metric, set()), metric


def exported_metric_names() -> set[str]:
    """Metric families the editor and the gateway define (prometheus-client's names)."""
    import collab.metrics  # noqa: F401  (registers the editor's metrics)
    import gateway.metrics  # noqa: F401  (registers the gateway's metrics)

    return {family.name for family in REGISTRY.collect()}


def test_metric_names_helper() -> None:
    names = metric_names_in_monitoring()
    assert {
        "collab_fanout_seconds",
        "collab_frames_received",
        "collab_connections",
        "collab_gateway_upstream_healthy",
        "process_resident_memory_bytes",
        "process_cpu_seconds",
    } <= names
    assert not names & PROMETHEUS_SERIES
    assert not names & recorded_names()
    assert not any(n.endswith(("_total", "_bucket", "_sum", "_count")) for n in names)


def test_monitoring_reads_only_metrics_the_services_define() -> None:
    unknown = metric_names_in_monitoring() - exported_metric_names()
    assert not unknown, f"not exported by the editor or the gateway: {sorted(unknown)}"


def test_dashboard_shows_every_collab_metric() -> None:
    on_dashboard = {
        base_name(name)
        for query in dashboard_queries()
        for name in metric_names(query.expr)
        if name not in PROMETHEUS_SERIES
    }
    collab = {name for name in exported_metric_names() if name.startswith("collab_")}
    assert not collab - on_dashboard, f"not on the dashboard: {sorted(collab - on_dashboard)}"

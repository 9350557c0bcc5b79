"""The alert rules: promtool accepts and unit-tests them; every alert is documented and tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.monitoring.names import (
    ROOT,
    RULES_PATH,
    RULES_TEST_PATH,
    RUNBOOK_PATH,
    alert_rules,
    load_rules,
    load_rules_tests,
    metric_names,
    recorded_names,
    rule_queries,
    vector_selectors,
)

RUNBOOK_URL = "https://github.com/collab/collab/blob/main/deploy/monitoring/runbook.md#"
EXPECTED_ALERTS = {
    "CollabEditorDown",
    "CollabGatewayDown",
    "CollabNoHealthyUpstream",
    "CollabHighRefusalRate",
    "CollabGateway5xx",
    "CollabRelayLatencyHigh",
    "CollabFanoutLatencyHigh",
    "CollabPersistenceFailing",
    "CollabPersistenceLagging",
    "CollabHealEventsFrequent",
    "CollabRedisPublishFailing",
    "CollabNearConnectionLimit",
    "CollabEventLoopLagHigh",
}
SEVERITIES = {"page", "ticket"}
# What every section of the runbook tells, as bold lead-ins.
RUNBOOK_PARTS = ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**")


def promtool() -> str:
    """The promtool binary; a test that needs it fails (not skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed (Debian package `prometheus`): run `make install`",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Anchor of each heading of the runbook -> text up to the next heading of any level."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOK_PATH.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


def rule_id(rule: dict[str, Any]) -> str:
    extra = {k: v for k, v in rule.get("labels", {}).items() if k != "severity"}
    suffix = "".join(f"-{v}" for v in extra.values())
    return f"{rule['alert']}-{rule['labels'].get('severity')}{suffix}"


ALERT_RULES = alert_rules()


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES_PATH.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", str(RULES_TEST_PATH.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_groups() -> None:
    names = [group["name"] for group in load_rules()["groups"]]
    assert {"collab-editor", "collab-gateway"} <= set(names)
    assert len(names) == len(set(names)), names


def test_the_expected_alerts_exist() -> None:
    assert {rule["alert"] for rule in ALERT_RULES} == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_alert_is_labelled_and_annotated(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"
    assert "{{ $labels." in annotations["description"] or "{{ $value" in annotations["description"]
    assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_runbook_has_a_section_per_alert(alert: str) -> None:
    sections = runbook_sections()
    anchor = alert.lower()
    assert anchor in sections, f"runbook.md has no heading for #{anchor}"
    for part in RUNBOOK_PARTS:
        assert part in sections[anchor], f"runbook section {alert} lacks {part}"


def test_runbook_links_the_dashboard() -> None:
    text = RUNBOOK_PATH.read_text(encoding="utf-8")
    assert "collab-overview" in text


def expected_alerts_by_name() -> dict[str, list[list[dict[str, Any]]]]:
    """alertname -> the exp_alerts list of every alert_rule_test naming it."""
    cases: dict[str, list[list[dict[str, Any]]]] = {}
    for test in load_rules_tests()["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_every_alert_rule_fires_in_a_unit_test(rule: dict[str, Any]) -> None:
    # Rules sharing an alert name differ in their static labels (severity, cause).
    static = {k: str(v) for k, v in rule["labels"].items()}
    fired = [
        alert
        for exp_alerts in expected_alerts_by_name().get(rule["alert"], [])
        for alert in exp_alerts
        if static.items() <= {k: str(v) for k, v in alert.get("exp_labels", {}).items()}.items()
    ]
    assert fired, f"no case of rules_test.yml fires {rule['alert']} with labels {static}"


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_every_alert_has_a_quiet_case(alert: str) -> None:
    cases = expected_alerts_by_name().get(alert, [])
    assert any(not exp_alerts for exp_alerts in cases), f"no case expects {alert} quiet"


def test_unit_tests_use_the_rules_file() -> None:
    assert load_rules_tests()["rule_files"] == ["rules.yml"]


def test_rules_select_the_services_by_job() -> None:
    """Every selector of an exported or Prometheus series names the editor or gateway job."""
    recorded = recorded_names()
    problems = []
    for query in rule_queries():
        for selector in vector_selectors(query.expr):
            if selector.name in recorded:
                continue
            jobs = [m.value for m in selector.matchers.matchers if m.name == "job"]
            if jobs not in ([".*editor.*"], [".*gateway.*"]):
                problems.append(f"{query.where}: {selector}")
    assert not problems, "\n".join(problems)


def test_alerts_read_recorded_series_that_exist() -> None:
    recorded = recorded_names()
    used = {
        name
        for query in rule_queries()
        if query.source == "alert"
        for name in metric_names(query.expr)
        if ":" in name
    }
    assert used <= recorded, used - recorded

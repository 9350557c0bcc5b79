"""The fuzz counters (tests/fuzz/stats.py) are printed by tests/fuzz/conftest.py; when only
the abuse tests run, print them here."""

from __future__ import annotations

from typing import Any

from tests.fuzz import stats


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not stats.COUNTS or stats.PRINTED:
        return
    stats.PRINTED = True
    terminalreporter.section("fuzz and abuse counts")
    for line in stats.summary_lines():
        terminalreporter.write_line(line)
    stats.write_json()

"""Print how many frames the fuzz tests tried (and how many connections abuse tests opened)."""

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

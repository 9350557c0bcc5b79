"""The log of connections dropped by the request-head deadline: a flood writes a line a minute.

The deadline itself is checked against real servers (tests/abuse/test_limits.py and
tests/e2e/test_gateway.py).
"""

from __future__ import annotations

import logging

import pytest
from collab_common.handshake import DroppedHandshakeLog

from tests.support.clock import FakeClock

LOGGER = "collab_common.handshake"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_the_first_drop_is_logged_at_once_and_says_that_more_are_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    log = DroppedHandshakeLog(10.0, clock=FakeClock())

    log.record()

    assert lines(caplog) == [
        "dropped a connection that sent no complete request head within 10.0s; "
        "further drops are logged at most once every 60s"
    ]
    assert caplog.records[0].levelno == logging.INFO


def test_a_flood_of_drops_writes_one_line_a_minute_with_the_count_since_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = FakeClock()
    log = DroppedHandshakeLog(1.0, clock=clock)
    log.record()
    for _ in range(500):  # within the minute: counted, not logged
        clock.advance(0.1)
        log.record()
    assert len(lines(caplog)) == 1

    clock.advance(20)  # 70 s after the first line
    log.record()

    assert lines(caplog)[1:] == [
        "dropped 501 connections that sent no complete request head within 1.0s in the last 70s"
    ]
    log.record()  # a new minute starts with the line just written
    assert len(lines(caplog)) == 2

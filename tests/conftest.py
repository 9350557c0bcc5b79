"""Fixtures shared by every test: real Redis, real PostgreSQL, real editor processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz import stats
from tests.support.processes import (
    EditorInstance,
    GatewayInstance,
    PostgresDatabase,
    RedisServer,
)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis on a free port, stopped after the test."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_database() -> Iterator[PostgresDatabase]:
    """A fresh, migrated PostgreSQL database, dropped after the test."""
    database = PostgresDatabase().create()
    yield database
    database.drop()


@pytest.fixture
def editors() -> Iterator[list[EditorInstance]]:
    """Editor instances a test starts; every one is stopped afterwards."""
    started: list[EditorInstance] = []
    yield started
    for instance in started:
        instance.kill()


@pytest.fixture
def gateways() -> Iterator[list[GatewayInstance]]:
    """Gateway processes a test starts; every one is killed afterwards."""
    started: list[GatewayInstance] = []
    yield started
    for instance in started:
        instance.kill()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many frames the fuzz tests tried and what the abuse tests opened."""
    if not stats.COUNTS or stats.PRINTED:
        return
    stats.PRINTED = True
    terminalreporter.section("fuzz and abuse counts")
    for line in stats.summary_lines():
        terminalreporter.write_line(line)
    stats.write_json()

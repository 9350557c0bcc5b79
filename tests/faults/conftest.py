"""Fixtures of the fault tests: a private PostgreSQL server the test may stop, and the run."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from tests.faults.scenario import EditingRun
from tests.faults.scenario import editing_run as start_editing_run
from tests.support.pgcluster import PrivatePostgres
from tests.support.processes import EditorInstance, GatewayInstance, RedisServer


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (never the shared one on 5432), migrated."""
    server = PrivatePostgres()
    try:
        server.create()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def editing_run(
    editors: list[EditorInstance], gateways: list[GatewayInstance], redis_server: RedisServer
) -> EditingRun:
    """`scenario.editing_run` on the test's Redis: `async with editing_run(name, db_url)`."""
    return functools.partial(
        start_editing_run, editors=editors, gateways=gateways, redis_url=redis_server.url
    )

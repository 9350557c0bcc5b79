"""Fixtures of the fault tests: a private PostgreSQL server the test may stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgcluster import PrivatePostgres


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (never the shared one on 5432), migrated."""
    server = PrivatePostgres()
    try:
        server.create()
        yield server
    finally:
        server.destroy()

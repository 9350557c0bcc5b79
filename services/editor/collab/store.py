"""Durable document storage on the Django ORM: update log, snapshots, compaction.

Synchronous by design (the ORM is); `AsyncStore` is the thin edge the event loop uses.
Every method works the same on PostgreSQL and SQLite: one shared test suite checks both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from pycrdt import Doc, merge_updates

from collab.models import Document, Snapshot, Update

logger = logging.getLogger(__name__)

# A reader racing a compaction can see the old snapshot and the already-trimmed log;
# it notices the hole and reads again. Compactions are rare, so a few tries suffice.
_READ_ATTEMPTS = 5
# Django's connections are per thread: every store call runs on the one database thread.
_on_database_thread = sync_to_async(thread_sensitive=True)
_ROWS_PER_STATEMENT = 1000
# How an upsert adds a batch's counters to a document's.
_COUNTERS_UPDATE = (
    "last_seq = {table}.last_seq + excluded.last_seq,"
    " size_bytes = {table}.size_bytes + excluded.size_bytes,"
    " log_count = {table}.log_count + excluded.log_count,"
    " updated_at = excluded.updated_at"
)
_Row = tuple[Any, ...]


class StorageError(Exception):
    """The stored data of a document is inconsistent (never expected; logged loudly)."""


@dataclass(frozen=True, slots=True)
class Tail:
    """What a reader at `after_seq` lacks: the merged updates and the seq they reach."""

    update: bytes | None
    last_seq: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Appended:
    """Where one document's updates of a batch landed in its log."""

    first_seq: int
    last_seq: int
    size_bytes: int
    log_count: int


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Metadata of a stored document, as the HTTP API shows it."""

    id: str
    size_bytes: int
    last_seq: int
    created_at: datetime
    updated_at: datetime


class DocumentStore:
    """The update log and snapshots of every document, in one database."""

    def __init__(self, *, using: str = "default", snapshot_history: int = 10) -> None:
        self.using = using
        self.snapshot_history = snapshot_history

    def read_since(self, doc_id: str, after_seq: int = 0) -> Tail:
        """Everything after `after_seq` merged into one update (None when nothing is new)."""
        for _ in range(_READ_ATTEMPTS):
            tail = self._try_read_since(doc_id, after_seq)
            if tail is not None:
                return tail
        raise StorageError(f"log of document {doc_id!r} keeps changing under the reader")

    def _try_read_since(self, doc_id: str, after_seq: int) -> Tail | None:
        with transaction.atomic(using=self.using):
            doc = Document.objects.using(self.using).filter(id=doc_id).first()
            if doc is None or doc.last_seq <= after_seq:
                return Tail(None, after_seq, doc.size_bytes if doc else 0)
            parts: list[bytes] = []
            base = after_seq
            snapshot = (
                Snapshot.objects.using(self.using)
                .filter(document_id=doc_id, seq__gt=after_seq)
                .order_by("-seq")
                .values_list("seq", "data")
                .first()
            )
            if snapshot is not None:
                base = snapshot[0]
                parts.append(bytes(snapshot[1]))
            rows = list(
                Update.objects.using(self.using)
                .filter(document_id=doc_id, seq__gt=base)
                .order_by("seq")
                .values_list("seq", "data")
            )
        if any(seq != base + offset for offset, (seq, _) in enumerate(rows, start=1)):
            return None  # a compaction trimmed the log between our two reads
        parts.extend(bytes(data) for _, data in rows)
        last_seq = rows[-1][0] if rows else base
        if last_seq < doc.last_seq:
            # Each statement sees what was committed when it began: a compaction by
            # another process that committed after the snapshot was read deleted the
            # rows after it. Reading on would return an old document.
            return None
        if last_seq == after_seq:
            return Tail(None, after_seq, doc.size_bytes)
        update = parts[0] if len(parts) == 1 else merge_updates(*parts)
        return Tail(update, last_seq, doc.size_bytes)

    def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Appended]:
        """Append each document's updates in one transaction; documents are created on demand.

        An upsert numbers every document's new updates (its row lock, taken in id order,
        queues concurrent writers of the same document instead of deadlocking them, and
        keeps the numbering gapless) and an insert stores them. Plain SQL: the ORM needs
        four statements and compiles each query every time.
        """
        batch = {doc_id: batch[doc_id] for doc_id in sorted(batch) if batch[doc_id]}
        if not batch:
            return {}
        connection = connections[self.using]
        if connection.vendor == "postgresql":
            return _append_postgresql(connection, batch)
        return _append_portable(connection, batch)

    def last_seqs(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """The newest sequence number of each stored document among `doc_ids`."""
        found: dict[str, int] = {}
        # Chunked so that a process with many rooms never builds an unbounded IN list.
        for start in range(0, len(doc_ids), 500):
            chunk = doc_ids[start : start + 500]
            found.update(
                Document.objects.using(self.using)
                .filter(id__in=chunk)
                .values_list("id", "last_seq")
            )
        return found

    def compact(self, doc_id: str) -> int | None:
        """Merge the newest snapshot and the log into a new snapshot; return its size.

        Returns None when there is nothing to compact. Older snapshots beyond the
        configured history are pruned; the kept ones are the document's version history.
        """
        with transaction.atomic(using=self.using):
            doc = Document.objects.using(self.using).select_for_update().filter(id=doc_id).first()
            if doc is None or doc.log_count == 0:
                return None
            tail = self._try_read_since(doc_id, 0)
            if tail is None or tail.update is None:
                raise StorageError(f"log of document {doc_id!r} has a hole")
            merged: Doc[Any] = Doc()
            merged.apply_update(tail.update)
            state = merged.get_update()
            Snapshot.objects.using(self.using).create(
                document_id=doc_id, seq=tail.last_seq, data=state
            )
            Update.objects.using(self.using).filter(
                document_id=doc_id, seq__lte=tail.last_seq
            ).delete()
            stale = list(
                Snapshot.objects.using(self.using)
                .filter(document_id=doc_id)
                .order_by("-seq")
                .values_list("id", flat=True)[self.snapshot_history :]
            )
            if stale:
                Snapshot.objects.using(self.using).filter(id__in=stale).delete()
            doc.size_bytes = len(state)
            doc.log_count = 0
            doc.save(using=self.using, update_fields=["size_bytes", "log_count"])
        logger.info(
            "compacted document %s at seq %d into %d bytes", doc_id, tail.last_seq, len(state)
        )
        return len(state)

    def describe(self, doc_id: str) -> DocumentInfo | None:
        """Metadata of one document, or None when it was never written."""
        doc = Document.objects.using(self.using).filter(id=doc_id).first()
        return _info(doc) if doc else None

    def list_documents(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        doc: str | None = None,
        prefix: str | None = None,
    ) -> list[DocumentInfo]:
        """Documents, most recently updated first; optionally one id or one id prefix."""
        docs = Document.objects.using(self.using).order_by("-updated_at", "id")
        if doc is not None:
            docs = docs.filter(id=doc)
        if prefix is not None:
            docs = docs.filter(id__startswith=prefix)
        return [_info(doc) for doc in docs[offset : offset + limit]]

    def counts(self, doc_id: str) -> tuple[int, int]:
        """(snapshots, log entries) kept for a document."""
        snapshots = Snapshot.objects.using(self.using).filter(document_id=doc_id).count()
        updates = Update.objects.using(self.using).filter(document_id=doc_id).count()
        return (snapshots, updates)


def _appended(
    batch: Mapping[str, Sequence[bytes]], counters: Sequence[_Row]
) -> dict[str, Appended]:
    """Where each document's updates landed, from its counters after the upsert."""
    return {
        doc_id: Appended(last_seq - len(batch[doc_id]) + 1, last_seq, size_bytes, log_count)
        for doc_id, last_seq, size_bytes, log_count in counters
    }


def _chunks(rows: list[_Row]) -> Iterator[list[_Row]]:
    # Statements stay far below the parameter limits (SQLite: 32766, PostgreSQL: 65535).
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        yield rows[start : start + _ROWS_PER_STATEMENT]


def _flatten(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


def _values(columns: int, rows: int) -> str:
    row = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([row] * rows)


def _upsert_counters_sql(connection: BaseDatabaseWrapper, rows: int) -> str:
    table = connection.ops.quote_name(Document._meta.db_table)
    return (
        f"INSERT INTO {table} (id, created_at, updated_at, last_seq, size_bytes, log_count)"
        f" VALUES {_values(6, rows)}"
        f" ON CONFLICT (id) DO UPDATE SET {_COUNTERS_UPDATE.format(table=table)}"
        " RETURNING id, last_seq, size_bytes, log_count"
    )


def _insert_updates_sql(connection: BaseDatabaseWrapper, rows: int) -> str:
    table = connection.ops.quote_name(Update._meta.db_table)
    return f"INSERT INTO {table} (document_id, seq, data, created_at) VALUES {_values(4, rows)}"


def _append_portable(
    connection: BaseDatabaseWrapper, batch: Mapping[str, Sequence[bytes]]
) -> dict[str, Appended]:
    """SQLite (3.35+) and any other backend: a few statements in one transaction."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    counters = [
        (doc_id, now, now, len(updates), sum(map(len, updates)), len(updates))
        for doc_id, updates in batch.items()
    ]
    results: dict[str, Appended] = {}
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for chunk in _chunks(counters):
            cursor.execute(_upsert_counters_sql(connection, len(chunk)), _flatten(chunk))
            results.update(_appended(batch, cursor.fetchall()))
        rows = [
            (doc_id, results[doc_id].first_seq + index, update, now)
            for doc_id, updates in batch.items()
            for index, update in enumerate(updates)
        ]
        for chunk in _chunks(rows):
            cursor.execute(_insert_updates_sql(connection, len(chunk)), _flatten(chunk))
    return results


def _append_postgresql(
    connection: BaseDatabaseWrapper, batch: Mapping[str, Sequence[bytes]]
) -> dict[str, Appended]:
    """PostgreSQL: one statement, whatever the batch holds, so one round trip.

    The batch travels as arrays, so the text never changes: psycopg prepares it on the
    server after a few calls, and binds the updates as binary (Django's cursors quote
    every parameter into the SQL text, bytes as hex). A statement is atomic on its own.
    """
    doc_ids = list(batch)
    params = {
        "docs": doc_ids,
        "counts": [len(batch[doc_id]) for doc_id in doc_ids],
        "sizes": [sum(map(len, batch[doc_id])) for doc_id in doc_ids],
        "update_docs": [doc_id for doc_id in doc_ids for _ in batch[doc_id]],
        "from_end": [len(u) - 1 - i for u in batch.values() for i in range(len(u))],
        "data": [update for updates in batch.values() for update in updates],
        "now": timezone.now(),
    }
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        sql = _append_postgresql_sql(
            connection.ops.quote_name(Document._meta.db_table),
            connection.ops.quote_name(Update._meta.db_table),
        )
        cursor.execute(sql, params)
        return _appended(batch, cursor.fetchall())


@functools.cache
def _append_postgresql_sql(documents: str, updates: str) -> str:
    # Data-modifying CTEs run to completion whether or not the outer query reads them;
    # each update's seq counts back from its document's new last_seq.
    return (
        "WITH counters AS ("
        f" INSERT INTO {documents} (id, created_at, updated_at, last_seq, size_bytes, log_count)"
        " SELECT id, %(now)s, %(now)s, count, size, count"
        " FROM unnest(%(docs)s::text[], %(counts)s::bigint[], %(sizes)s::bigint[])"
        " AS batch (id, count, size) ORDER BY id"
        f" ON CONFLICT (id) DO UPDATE SET {_COUNTERS_UPDATE.format(table=documents)}"
        " RETURNING id, last_seq, size_bytes, log_count),"
        " stored AS ("
        f" INSERT INTO {updates} (document_id, seq, data, created_at)"
        " SELECT batch.id, counters.last_seq - batch.from_end, batch.data, %(now)s"
        " FROM unnest(%(update_docs)s::text[], %(from_end)s::bigint[], %(data)s::bytea[])"
        " AS batch (id, from_end, data) JOIN counters ON counters.id = batch.id)"
        " SELECT id, last_seq, size_bytes, log_count FROM counters"
    )


def _info(doc: Document) -> DocumentInfo:
    return DocumentInfo(doc.id, doc.size_bytes, doc.last_seq, doc.created_at, doc.updated_at)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncStore:
    """The store as the event loop sees it: each call runs on Django's database thread.

    Not through `database_sync_to_async`: it closes and health-checks the connection
    around every call (a request's life cycle), one more round trip per append. The
    connection stays open instead (until `close`, or after each call when CONN_MAX_AGE
    is 0); after a failed call it is closed if it no longer works, and the next call
    opens a new one (every caller retries or reports).
    """

    def __init__(self, store: DocumentStore) -> None:
        self.sync = store

    async def _call(self, method: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await _on_database_thread(self._guarded)(method, *args, **kwargs)

    def _guarded(self, method: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        connection = connections[self.sync.using]
        try:
            return method(*args, **kwargs)
        except Exception:
            connection.close_if_unusable_or_obsolete()
            raise
        finally:
            if connection.settings_dict["CONN_MAX_AGE"] == 0:
                connection.close()  # what CONN_MAX_AGE=0 asks for: no connection kept

    async def close(self) -> None:
        """Close the database thread's connection (at shutdown; it is reopened if used)."""
        await _on_database_thread(self._close)()

    def _close(self) -> None:
        connection = connections[self.sync.using]
        if connection.connection is not None:
            connection.close()

    async def read_since(self, doc_id: str, after_seq: int = 0) -> Tail:
        """See DocumentStore.read_since."""
        return await self._call(self.sync.read_since, doc_id, after_seq)

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Appended]:
        """See DocumentStore.append."""
        return await self._call(self.sync.append, batch)

    async def last_seqs(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """See DocumentStore.last_seqs."""
        return await self._call(self.sync.last_seqs, doc_ids)

    async def compact(self, doc_id: str) -> int | None:
        """See DocumentStore.compact."""
        return await self._call(self.sync.compact, doc_id)

    async def describe(self, doc_id: str) -> DocumentInfo | None:
        """See DocumentStore.describe."""
        return await self._call(self.sync.describe, doc_id)

    async def list_documents(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        doc: str | None = None,
        prefix: str | None = None,
    ) -> list[DocumentInfo]:
        """See DocumentStore.list_documents."""
        return await self._call(
            self.sync.list_documents, limit=limit, offset=offset, doc=doc, prefix=prefix
        )

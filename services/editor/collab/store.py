"""Durable document storage on the Django ORM: update log, snapshots, compaction.

Synchronous by design (the ORM is); `AsyncStore` is the thin edge the event loop uses.
Every method works the same on PostgreSQL and SQLite: one shared test suite checks both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone
from pycrdt import Doc, merge_updates

from collab.models import Document, Snapshot, Update

logger = logging.getLogger(__name__)

# A reader racing a compaction can see the old snapshot and the already-trimmed log;
# it notices the hole and reads again. Compactions are rare, so a few tries suffice.
_READ_ATTEMPTS = 5


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
        if last_seq == after_seq:
            return Tail(None, after_seq, doc.size_bytes)
        update = parts[0] if len(parts) == 1 else merge_updates(*parts)
        return Tail(update, last_seq, doc.size_bytes)

    def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Appended]:
        """Append each document's updates in one transaction; documents are created on demand."""
        doc_ids = sorted(doc_id for doc_id, updates in batch.items() if updates)
        if not doc_ids:
            return {}
        now = timezone.now()
        results: dict[str, Appended] = {}
        with transaction.atomic(using=self.using):
            documents = Document.objects.using(self.using)
            documents.bulk_create(
                [Document(id=doc_id, created_at=now, updated_at=now) for doc_id in doc_ids],
                ignore_conflicts=True,
            )
            # Row locks in id order: concurrent writers of the same documents queue up
            # instead of deadlocking, and each document's numbering stays gapless.
            locked = list(documents.select_for_update().filter(id__in=doc_ids).order_by("id"))
            rows: list[Update] = []
            for doc in locked:
                updates = batch[doc.id]
                first_seq = doc.last_seq + 1
                rows.extend(
                    Update(document_id=doc.id, seq=first_seq + index, data=update, created_at=now)
                    for index, update in enumerate(updates)
                )
                doc.last_seq += len(updates)
                doc.size_bytes += sum(len(update) for update in updates)
                doc.log_count += len(updates)
                doc.updated_at = now
                results[doc.id] = Appended(first_seq, doc.last_seq, doc.size_bytes, doc.log_count)
            Update.objects.using(self.using).bulk_create(rows)
            documents.bulk_update(locked, ["last_seq", "size_bytes", "log_count", "updated_at"])
        return results

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


def _info(doc: Document) -> DocumentInfo:
    return DocumentInfo(doc.id, doc.size_bytes, doc.last_seq, doc.created_at, doc.updated_at)


class AsyncStore:
    """The store as the event loop sees it: each call runs on Django's database thread."""

    def __init__(self, store: DocumentStore) -> None:
        self.sync = store

    async def read_since(self, doc_id: str, after_seq: int = 0) -> Tail:
        """See DocumentStore.read_since."""
        return cast(Tail, await database_sync_to_async(self.sync.read_since)(doc_id, after_seq))

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Appended]:
        """See DocumentStore.append."""
        return cast(dict[str, Appended], await database_sync_to_async(self.sync.append)(batch))

    async def last_seqs(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """See DocumentStore.last_seqs."""
        return cast(dict[str, int], await database_sync_to_async(self.sync.last_seqs)(doc_ids))

    async def compact(self, doc_id: str) -> int | None:
        """See DocumentStore.compact."""
        return cast(int | None, await database_sync_to_async(self.sync.compact)(doc_id))

    async def describe(self, doc_id: str) -> DocumentInfo | None:
        """See DocumentStore.describe."""
        return cast(DocumentInfo | None, await database_sync_to_async(self.sync.describe)(doc_id))

    async def list_documents(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        doc: str | None = None,
        prefix: str | None = None,
    ) -> list[DocumentInfo]:
        """See DocumentStore.list_documents."""
        listed = await database_sync_to_async(self.sync.list_documents)(
            limit=limit, offset=offset, doc=doc, prefix=prefix
        )
        return cast(list[DocumentInfo], listed)

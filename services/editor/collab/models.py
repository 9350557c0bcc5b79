"""Durable storage of documents: a registry row, an append-only update log, snapshots."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Document(models.Model):
    """One collaborative document and the bookkeeping of its log."""

    id = models.CharField(primary_key=True, max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    # The time of the last edit; set by appends only (compaction is not an edit).
    updated_at = models.DateTimeField(default=timezone.now)
    # Sequence number of the newest update in the log; updates are numbered 1, 2, 3...
    last_seq = models.BigIntegerField(default=0)
    # Stored bytes: the newest snapshot plus every log entry after it.
    size_bytes = models.BigIntegerField(default=0)
    # Log entries written since the newest snapshot; drives compaction.
    log_count = models.IntegerField(default=0)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.id


class Update(models.Model):
    """One binary Yjs update, numbered per document in the order it became durable."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="updates")
    seq = models.BigIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "seq"], name="collab_update_doc_seq")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.seq}"


class Snapshot(models.Model):
    """The merged state of a document up to and including update `seq`."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="snapshots")
    seq = models.BigIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "seq"], name="collab_snapshot_doc_seq")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}@{self.seq}"

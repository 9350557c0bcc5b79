"""The Django admin for operators: documents with their size and storage counts."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from collab.models import Document


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only view of the document registry (content changes only through Yjs)."""

    list_display = ("id", "size_bytes", "updated_at", "snapshot_count", "log_count", "last_seq")
    search_fields = ("id",)
    ordering = ("-updated_at",)
    readonly_fields = ("id", "created_at", "updated_at", "last_seq", "size_bytes", "log_count")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        queryset: QuerySet[Document] = super().get_queryset(request)
        return queryset.annotate(snapshot_total=Count("snapshots"))

    @admin.display(description="snapshots", ordering="snapshot_total")
    def snapshot_count(self, document: Document) -> int:
        return int(getattr(document, "snapshot_total", 0))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Document | None = None) -> bool:
        return False

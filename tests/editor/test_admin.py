"""The Django admin shows operators each document with its storage counts."""

from __future__ import annotations

import pytest
from collab.store import DocumentStore


@pytest.mark.django_db
def test_admin_lists_documents_with_size_and_storage_counts(admin_client):
    store = DocumentStore()
    from pycrdt import Doc, Text

    doc = Doc()
    text = doc.get("text", type=Text)
    text += "hello"
    store.append({"listed-doc": [doc.get_update()]})
    store.compact("listed-doc")
    text += " world"
    store.append({"listed-doc": [doc.get_update()]})

    response = admin_client.get("/admin/collab/document/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "listed-doc" in page
    row = page[page.index("listed-doc") :]
    # snapshot count 1, log count 1 (one update after the compaction)
    assert '<td class="field-snapshot_count">1</td>' in row
    assert '<td class="field-log_count">1</td>' in row


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_probes_answer_whatever_the_host_header(client, path):
    # Kubelets and Prometheus reach pods by IP, which is not an allowed host.
    assert client.get(path, HTTP_HOST="10.1.2.3:8001").status_code == 200
    assert client.get("/api/docs", HTTP_HOST="10.1.2.3:8001").status_code == 400

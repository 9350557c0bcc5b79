"""The storage contract, one suite over both backends: SQLite ("default") and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from collab.models import Document, Snapshot, Update
from collab.store import Appended, DocumentStore, StorageError, Tail
from django.db import connections
from pycrdt import Doc, Text, merge_updates

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])

SNAPSHOT_HISTORY = 3


@pytest.fixture(params=["default", "postgres"], ids=["sqlite", "postgres"])
def alias(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(alias: str) -> DocumentStore:
    return DocumentStore(using=alias, snapshot_history=SNAPSHOT_HISTORY)


class Writer:
    """A pycrdt client whose edits are collected as separate updates."""

    def __init__(self, client_id: int = 1) -> None:
        self.doc = Doc(client_id=client_id)
        self.text = self.doc.get("text", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def type(self, content: str) -> bytes:
        self.text += content
        return self.updates[-1]

    def edits(self, count: int, prefix: str = "") -> list[bytes]:
        return [self.type(f"{prefix}{index};") for index in range(count)]

    def delete(self, start: int, stop: int) -> bytes:
        del self.text[start:stop]
        return self.updates[-1]


def text_of(*updates: bytes | None) -> str:
    doc = Doc()
    text = doc.get("text", type=Text)
    for update in updates:
        assert update is not None
        doc.apply_update(update)
    return str(text)


def stored_seqs(alias: str, doc_id: str) -> list[int]:
    return list(
        Update.objects.using(alias)
        .filter(document_id=doc_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


def snapshot_seqs(alias: str, doc_id: str) -> list[int]:
    return list(
        Snapshot.objects.using(alias)
        .filter(document_id=doc_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


# unknown documents ---------------------------------------------------------------------


def test_read_since_of_an_unknown_document_has_nothing(store):
    assert store.read_since("missing") == Tail(None, 0, 0)
    assert store.read_since("missing", 7) == Tail(None, 7, 0)


def test_unknown_document_is_not_described_and_has_no_rows(store):
    assert store.describe("missing") is None
    assert store.counts("missing") == (0, 0)
    assert store.last_seqs(["missing"]) == {}
    assert store.compact("missing") is None


def test_append_of_nothing_creates_nothing(store):
    assert store.append({}) == {}
    assert store.append({"empty": []}) == {}
    assert store.describe("empty") is None
    assert store.list_documents() == []


# append ------------------------------------------------------------------------------


def test_append_numbers_updates_from_one_and_reports_size_and_log_count(store, alias):
    updates = Writer().edits(3)

    appended = store.append({"doc": updates})

    assert appended == {"doc": Appended(1, 3, sum(map(len, updates)), 3)}
    assert stored_seqs(alias, "doc") == [1, 2, 3]


def test_append_continues_numbering_without_gaps_across_calls(store, alias):
    updates = Writer().edits(6)

    first = store.append({"doc": updates[:2]})["doc"]
    second = store.append({"doc": updates[2:3]})["doc"]
    third = store.append({"doc": updates[3:]})["doc"]

    assert (first.first_seq, first.last_seq) == (1, 2)
    assert (second.first_seq, second.last_seq) == (3, 3)
    assert (third.first_seq, third.last_seq) == (4, 6)
    assert [first.log_count, second.log_count, third.log_count] == [2, 3, 6]
    assert third.size_bytes == sum(map(len, updates))
    assert stored_seqs(alias, "doc") == [1, 2, 3, 4, 5, 6]


def test_append_numbers_each_document_of_a_batch_separately(store, alias):
    a, b, c = Writer(1).edits(3, "a"), Writer(2).edits(2, "b"), Writer(3).edits(1, "c")
    store.append({"beta": b[:1]})

    appended = store.append({"gamma": c, "alpha": a[:2], "beta": b[1:]})
    later = store.append({"alpha": a[2:], "beta": []})

    assert appended == {
        "alpha": Appended(1, 2, len(a[0]) + len(a[1]), 2),
        "beta": Appended(2, 2, len(b[0]) + len(b[1]), 2),
        "gamma": Appended(1, 1, len(c[0]), 1),
    }
    assert later == {"alpha": Appended(3, 3, sum(map(len, a)), 3)}
    assert stored_seqs(alias, "alpha") == [1, 2, 3]
    assert stored_seqs(alias, "beta") == [1, 2]
    assert stored_seqs(alias, "gamma") == [1]
    assert store.last_seqs(["alpha", "beta", "gamma", "delta"]) == {
        "alpha": 3,
        "beta": 2,
        "gamma": 1,
    }


def test_append_of_a_batch_larger_than_one_statement_numbers_everything(store, alias):
    # More documents and more rows than one statement carries (the parameter limits).
    many = {f"doc-{index:04d}": [Writer(index + 1).type("x")] for index in range(1500)}
    long = Writer(9999).edits(2500)

    appended = store.append({**many, "long": long})

    assert appended["long"] == Appended(1, 2500, sum(map(len, long)), 2500)
    assert all(appended[doc_id].last_seq == 1 for doc_id in many)
    assert stored_seqs(alias, "long") == list(range(1, 2501))
    assert text_of(store.read_since("long").update) == "".join(f"{i};" for i in range(2500))
    assert len(store.last_seqs(list(many))) == 1500


def test_append_stores_the_bytes_unchanged(store, alias):
    updates = Writer().edits(2)

    store.append({"doc": updates})

    rows = Update.objects.using(alias).filter(document_id="doc").order_by("seq")
    assert [bytes(row.data) for row in rows] == updates


# read_since --------------------------------------------------------------------------


def test_read_since_zero_returns_the_whole_document(store):
    writer = Writer()
    updates = [*writer.edits(4), writer.delete(0, 3)]
    store.append({"doc": updates[:2]})
    store.append({"doc": updates[2:]})

    tail = store.read_since("doc")

    assert tail.last_seq == 5
    assert tail.size_bytes == sum(map(len, updates))
    assert text_of(tail.update) == str(writer.text)


@pytest.mark.parametrize("after_seq", [1, 2, 3, 4])
def test_read_since_returns_exactly_the_missing_updates_merged(store, after_seq):
    writer = Writer()
    updates = [*writer.edits(4), writer.delete(0, 1)]
    for update in updates:
        store.append({"doc": [update]})

    tail = store.read_since("doc", after_seq)

    assert tail.last_seq == 5
    missing = updates[after_seq:]
    assert tail.update == (missing[0] if len(missing) == 1 else merge_updates(*missing))
    assert text_of(*updates[:after_seq], tail.update) == str(writer.text)
    # Nothing the reader already had: alone, the tail lacks the edits it builds on.
    assert text_of(tail.update) == ""


def test_read_since_the_newest_seq_has_nothing_new(store):
    updates = Writer().edits(3)
    store.append({"doc": updates})
    size = sum(map(len, updates))

    assert store.read_since("doc", 3) == Tail(None, 3, size)
    assert store.read_since("doc", 9) == Tail(None, 9, size)


# compaction --------------------------------------------------------------------------


def test_compact_writes_a_snapshot_and_trims_the_log(store, alias):
    writer = Writer()
    updates = [*writer.edits(5), writer.delete(2, 6)]
    store.append({"doc": updates[:3]})
    store.append({"doc": updates[3:]})
    before = store.read_since("doc")

    size = store.compact("doc")

    assert size is not None
    assert store.counts("doc") == (1, 0)
    assert snapshot_seqs(alias, "doc") == [6]
    after = store.read_since("doc")
    assert after.last_seq == before.last_seq == 6
    assert text_of(after.update) == text_of(before.update) == str(writer.text)
    assert after.size_bytes == size
    info = store.describe("doc")
    assert info is not None
    assert (info.size_bytes, info.last_seq) == (size, 6)


def test_compact_snapshot_is_the_merged_document_state(store, alias):
    writer = Writer()
    store.append({"doc": writer.edits(4)})

    size = store.compact("doc")

    snapshot = Snapshot.objects.using(alias).get(document_id="doc")
    assert len(bytes(snapshot.data)) == size
    assert text_of(bytes(snapshot.data)) == str(writer.text)


def test_compact_resets_the_log_count_and_numbering_continues(store):
    writer = Writer()
    store.append({"doc": writer.edits(4)})
    snapshot_size = store.compact("doc")
    assert snapshot_size is not None

    more = writer.edits(2, "more")
    appended = store.append({"doc": more})["doc"]

    assert appended == Appended(5, 6, snapshot_size + sum(map(len, more)), 2)
    assert store.counts("doc") == (1, 2)
    assert text_of(store.read_since("doc").update) == str(writer.text)


def test_compact_returns_none_when_nothing_is_new(store):
    store.append({"doc": Writer().edits(2)})
    assert store.compact("doc") is not None

    assert store.compact("doc") is None
    assert store.counts("doc") == (1, 0)


def test_read_since_older_than_the_newest_snapshot_returns_everything_after_it(store):
    writer = Writer()
    updates = writer.edits(8)
    for update in updates[:5]:
        store.append({"doc": [update]})
    store.compact("doc")
    store.append({"doc": updates[5:]})

    for after_seq in range(5):
        tail = store.read_since("doc", after_seq)
        assert tail.last_seq == 8
        assert text_of(*updates[:after_seq], tail.update) == str(writer.text)


def test_read_since_at_the_snapshot_returns_only_the_log_after_it(store):
    writer = Writer()
    updates = writer.edits(7)
    store.append({"doc": updates[:4]})
    store.compact("doc")
    store.append({"doc": updates[4:]})

    tail = store.read_since("doc", 4)

    assert tail.last_seq == 7
    assert tail.update == merge_updates(*updates[4:])
    assert text_of(*updates[:4], tail.update) == str(writer.text)
    assert store.read_since("doc", 5).update == merge_updates(*updates[5:])


def test_read_since_before_a_snapshot_without_later_log_returns_the_snapshot(store):
    writer = Writer()
    updates = writer.edits(3)
    store.append({"doc": updates})
    store.compact("doc")

    tail = store.read_since("doc", 1)

    assert tail.last_seq == 3
    assert text_of(tail.update) == str(writer.text)
    assert store.read_since("doc", 3).update is None


def test_read_since_never_returns_a_document_older_than_its_last_seq(store, alias):
    # What a reader sees when another process's compaction commits between its reads of
    # the snapshot and of the log: an older snapshot, and the log after it gone.
    writer = Writer()
    store.append({"doc": writer.edits(3)})
    store.compact("doc")
    store.append({"doc": writer.edits(2, prefix="late")})
    Update.objects.using(alias).filter(document_id="doc").delete()

    with pytest.raises(StorageError, match="keeps changing"):
        store.read_since("doc", 0)


def test_snapshot_history_is_pruned_to_the_configured_length(store, alias):
    writer = Writer()
    for round_number in range(SNAPSHOT_HISTORY + 2):
        store.append({"doc": writer.edits(2, f"r{round_number}-")})
        store.compact("doc")

    assert snapshot_seqs(alias, "doc") == [6, 8, 10]
    assert store.counts("doc") == (SNAPSHOT_HISTORY, 0)
    assert text_of(store.read_since("doc").update) == str(writer.text)


def test_snapshot_history_of_one_keeps_only_the_newest(alias):
    store = DocumentStore(using=alias, snapshot_history=1)
    writer = Writer()
    for _ in range(3):
        store.append({"doc": writer.edits(1)})
        store.compact("doc")

    assert snapshot_seqs(alias, "doc") == [3]
    assert text_of(store.read_since("doc").update) == str(writer.text)


def test_compaction_of_one_document_leaves_the_others_alone(store, alias):
    one, two = Writer(1), Writer(2)
    store.append({"one": one.edits(3), "two": two.edits(2)})

    store.compact("one")

    assert store.counts("one") == (1, 0)
    assert store.counts("two") == (0, 2)
    assert stored_seqs(alias, "two") == [1, 2]
    assert text_of(store.read_since("two").update) == str(two.text)


# metadata ----------------------------------------------------------------------------


def test_describe_reports_size_last_seq_and_times(store):
    updates = Writer().edits(3)
    store.append({"doc": updates[:1]})
    created = store.describe("doc")
    store.append({"doc": updates[1:]})

    info = store.describe("doc")

    assert created is not None
    assert info is not None
    assert info.id == "doc"
    assert info.size_bytes == sum(map(len, updates))
    assert info.last_seq == 3
    assert info.created_at == created.created_at
    assert info.updated_at > created.updated_at
    assert info.created_at <= info.updated_at


def test_new_document_is_not_created_after_it_was_last_updated(store):
    store.append({"doc": Writer().edits(1)})

    info = store.describe("doc")

    assert info is not None
    assert info.created_at <= info.updated_at


def test_list_documents_orders_by_most_recent_update(store):
    store.append({"a": Writer(1).edits(1)})
    store.append({"b": Writer(2).edits(1)})
    store.append({"c": Writer(3).edits(1)})
    assert [info.id for info in store.list_documents()] == ["c", "b", "a"]

    store.append({"a": Writer(4).edits(1)})

    assert [info.id for info in store.list_documents()] == ["a", "c", "b"]
    assert [info.id for info in store.list_documents(limit=2)] == ["a", "c"]
    assert [info.id for info in store.list_documents(limit=2, offset=2)] == ["b"]
    assert store.list_documents(offset=3) == []


def test_list_documents_describes_each_document(store):
    store.append({"a": Writer(1).edits(2), "b": Writer(2).edits(1)})

    listed = {info.id: info for info in store.list_documents()}

    assert listed == {"a": store.describe("a"), "b": store.describe("b")}


def test_compaction_is_not_an_edit_and_keeps_the_update_time(store):
    store.append({"a": Writer(1).edits(3)})
    store.append({"b": Writer(2).edits(1)})
    edited = store.describe("a")

    store.compact("a")

    compacted = store.describe("a")
    assert compacted is not None
    assert edited is not None
    assert compacted.updated_at == edited.updated_at
    assert [info.id for info in store.list_documents()] == ["b", "a"]


def test_counts_reports_snapshots_and_log_entries(store):
    writer = Writer()
    store.append({"doc": writer.edits(3)})
    assert store.counts("doc") == (0, 3)

    store.compact("doc")
    store.append({"doc": writer.edits(2)})

    assert store.counts("doc") == (1, 2)


# concurrency -------------------------------------------------------------------------

THREADS = 4
APPENDS_PER_THREAD = 25
SQLITE_FILE = "sqlite_file"


class WriterDatabase:
    """The database concurrent writers share: PostgreSQL itself, or SQLite in a file.

    The SQLite test database lives in memory with a shared cache, where a second writer
    gets "table is locked" at once instead of waiting for the lock. Production runs
    SQLite from a file, so the writers get a file database with the connection settings
    of "default" (IMMEDIATE transactions, busy timeout), attached in every thread.
    """

    def __init__(self, alias: str, sqlite_file: Path | None) -> None:
        self.alias = SQLITE_FILE if sqlite_file is not None else alias
        self.sqlite_file = sqlite_file

    def attach(self) -> None:
        """Make `self.alias` usable in the calling thread."""
        if self.sqlite_file is None:
            return
        base = connections["default"]
        settings = {**base.settings_dict, "NAME": str(self.sqlite_file)}
        connections[SQLITE_FILE] = type(base)(settings, alias=SQLITE_FILE)

    def detach(self) -> None:
        """Close the calling thread's connection."""
        connections[self.alias].close()
        if self.sqlite_file is not None:
            del connections[SQLITE_FILE]


@pytest.fixture
def writer_database(alias: str, tmp_path: Path) -> Iterator[WriterDatabase]:
    database = WriterDatabase(alias, tmp_path / "collab.sqlite3" if alias == "default" else None)
    database.attach()
    if database.sqlite_file is not None:
        with connections[SQLITE_FILE].schema_editor() as editor:
            for model in (Document, Update, Snapshot):
                editor.create_model(model)
    yield database
    database.detach()


def test_concurrent_appends_to_one_document_get_every_seq_exactly_once(writer_database):
    alias = writer_database.alias
    if alias == SQLITE_FILE:
        connections[alias].ensure_connection()
        assert connections[alias].transaction_mode == "IMMEDIATE"
        assert not connections[alias].is_in_memory_db()
    store = DocumentStore(using=alias, snapshot_history=SNAPSHOT_HISTORY)
    writers = [Writer(client_id=100 + index) for index in range(THREADS)]
    batches = [
        writer.edits(APPENDS_PER_THREAD, f"w{index}-") for index, writer in enumerate(writers)
    ]
    results: list[list[Appended]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def append_all(index: int) -> None:
        writer_database.attach()
        try:
            start.wait()
            for update in batches[index]:
                results[index].append(store.append({"doc": [update]})["doc"])
        except BaseException as error:
            errors.append(error)
        finally:
            writer_database.detach()

    threads = [threading.Thread(target=append_all, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = THREADS * APPENDS_PER_THREAD
    assert stored_seqs(alias, "doc") == list(range(1, total + 1))
    granted = sorted(appended.first_seq for batch in results for appended in batch)
    assert granted == list(range(1, total + 1))
    for appended_by_thread in results:
        seqs = [appended.first_seq for appended in appended_by_thread]
        assert seqs == sorted(seqs)
        assert all(appended.first_seq == appended.last_seq for appended in appended_by_thread)
    info = store.describe("doc")
    assert info is not None
    assert info.last_seq == total
    assert info.size_bytes == sum(len(update) for batch in batches for update in batch)
    assert store.counts("doc") == (0, total)
    tail = store.read_since("doc")
    assert tail.update is not None
    for writer in writers:
        writer.doc.apply_update(tail.update)
    assert text_of(tail.update) == str(writers[0].text)
    assert len({str(writer.text) for writer in writers}) == 1
    assert all(
        f"w{index}-{APPENDS_PER_THREAD - 1};" in text_of(tail.update) for index in range(THREADS)
    )


COMPACT_EVERY = 5


def test_concurrent_appends_and_compactions_lose_nothing(writer_database):
    # Compaction reads before it writes: on SQLite only an IMMEDIATE transaction keeps
    # it from failing with "database is locked" when a writer holds the lock.
    alias = writer_database.alias
    store = DocumentStore(using=alias, snapshot_history=SNAPSHOT_HISTORY)
    writers = [Writer(client_id=200 + index) for index in range(THREADS)]
    batches = [
        writer.edits(APPENDS_PER_THREAD, f"w{index}-") for index, writer in enumerate(writers)
    ]
    granted: list[int] = []
    compacted: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def append_and_compact(index: int) -> None:
        writer_database.attach()
        try:
            start.wait()
            for count, update in enumerate(batches[index], start=1):
                granted.append(store.append({"doc": [update]})["doc"].first_seq)
                if count % COMPACT_EVERY == 0:
                    size = store.compact("doc")
                    if size is not None:
                        compacted.append(size)
        except BaseException as error:
            errors.append(error)
        finally:
            writer_database.detach()

    threads = [
        threading.Thread(target=append_and_compact, args=(index,)) for index in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = THREADS * APPENDS_PER_THREAD
    assert sorted(granted) == list(range(1, total + 1))
    assert compacted
    newest_snapshot = snapshot_seqs(alias, "doc")[-1]
    assert len(snapshot_seqs(alias, "doc")) <= SNAPSHOT_HISTORY
    assert stored_seqs(alias, "doc") == list(range(newest_snapshot + 1, total + 1))
    tail = store.read_since("doc")
    assert tail.last_seq == total
    expected = Doc()
    for batch in batches:
        for update in batch:
            expected.apply_update(update)
    assert text_of(tail.update) == str(expected.get("text", type=Text))

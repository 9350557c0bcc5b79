"""The wire codec and document ids: pure functions over bytes and strings."""

from __future__ import annotations

import re

import pytest
from collab.codec import (
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    parse,
    sync_step1_frame,
    sync_step2_frame,
    update_frame,
)
from collab.docids import group_name, validate_doc_id
from collab.errors import BadFrame, CloseCode, InvalidDocumentId
from pycrdt import (
    Awareness,
    Doc,
    Text,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)


def _doc_with_text(content: str, client_id: int = 1) -> tuple[Doc, list[bytes]]:
    doc = Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=Text)
    text += content
    return doc, updates


# parse(): frames built by pycrdt -------------------------------------------------------


def test_sync_step1_from_pycrdt_parses_to_the_state_vector():
    doc, _ = _doc_with_text("hello")

    message = parse(create_sync_message(doc))

    assert message == SyncStep1(doc.get_state())


def test_sync_step1_of_an_empty_doc_parses_to_the_empty_state_vector():
    assert parse(create_sync_message(Doc())) == SyncStep1(b"\x00")


def test_sync_step2_reply_from_pycrdt_parses_to_the_missing_update():
    server, _ = _doc_with_text("hello", client_id=1)
    client = Doc(client_id=2)

    reply = handle_sync_message(create_sync_message(client)[1:], server)
    assert reply is not None
    message = parse(reply)

    assert isinstance(message, SyncStep2)
    assert message.update == server.get_update(client.get_state())
    fresh = Doc()
    fresh.apply_update(message.update)
    assert str(fresh.get("text", type=Text)) == "hello"


def test_update_message_from_pycrdt_parses_to_the_update():
    _, updates = _doc_with_text("hello")

    assert parse(create_update_message(updates[0])) == SyncUpdate(updates[0])


def test_awareness_message_from_pycrdt_parses_to_the_payload():
    awareness = Awareness(Doc(client_id=7))
    awareness.set_local_state({"user": {"name": "ada", "color": "#ff0000"}})
    payload = awareness.encode_awareness_update([7])

    assert parse(create_awareness_message(payload)) == AwarenessUpdate(payload)


def test_query_awareness_parses():
    assert parse(b"\x03") == QueryAwareness()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_384, 70_000])
def test_payload_lengths_needing_multi_byte_varints_parse(size):
    payload = bytes(index % 251 for index in range(size))

    assert parse(create_update_message(payload)) == SyncUpdate(payload)
    assert parse(create_awareness_message(payload)) == AwarenessUpdate(payload)


# parse(): refusals ---------------------------------------------------------------------

_VALID_UPDATE = create_update_message(b"\x00\x00")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty frame"),
        pytest.param(b"\x04\x00", id="unknown message type 4"),
        pytest.param(b"\x7f", id="unknown message type 127"),
        pytest.param(b"\x80\x01\x00", id="unknown multi-byte message type"),
        pytest.param(b"\x00\x03\x00", id="unknown sync type 3"),
        pytest.param(b"\x00\x7f\x00", id="unknown sync type 127"),
        pytest.param(b"\x02", id="auth message without payload"),
        pytest.param(b"\x02\x00\x05hello", id="auth message from a client"),
        pytest.param(b"\x00", id="sync frame without a sync type"),
        pytest.param(b"\x00\x00", id="sync step1 without a length"),
        pytest.param(b"\x00\x02", id="sync update without a length"),
        pytest.param(b"\x01", id="awareness without a length"),
        pytest.param(b"\x00\x02\x80", id="truncated varint: one continuation byte"),
        pytest.param(b"\x00\x02\x80\x80\x80", id="truncated varint: three continuation bytes"),
        pytest.param(b"\x01\xff\xff", id="truncated awareness varint"),
        pytest.param(b"\x00\x02\x80\x80\x80\x80\x80\x00", id="overlong varint: five continuation"),
        pytest.param(b"\x01" + b"\xff" * 9 + b"\x01", id="overlong varint: nine continuation"),
        pytest.param(b"\x00\x02" + b"\x80" * 64, id="overlong varint: endless"),
        pytest.param(b"\x00\x02\x05abcd", id="declared length longer than the payload"),
        pytest.param(b"\x00\x02\x03abcd", id="declared length shorter than the payload"),
        pytest.param(b"\x00\x02\x81\x01" + b"x" * 128, id="multi-byte length longer"),
        pytest.param(b"\x01\x02a", id="awareness length longer than the payload"),
        pytest.param(_VALID_UPDATE + b"\x00", id="trailing byte after a valid update"),
        pytest.param(_VALID_UPDATE + _VALID_UPDATE, id="two messages in one frame"),
        pytest.param(b"\x03\x00", id="query-awareness with a trailing byte"),
        pytest.param(b"\x03\x01\x00", id="query-awareness with a payload"),
    ],
)
def test_malformed_frames_are_refused_with_bad_frame(frame):
    with pytest.raises(BadFrame) as caught:
        parse(frame)

    assert caught.value.close_code == CloseCode.BAD_FRAME


def test_refusal_of_an_auth_message_says_why():
    with pytest.raises(BadFrame, match="auth"):
        parse(b"\x02\x00\x00")


def test_refusal_of_an_unknown_sync_type_names_it():
    with pytest.raises(BadFrame, match="sync type 9"):
        parse(b"\x00\x09\x00")


def test_four_byte_varint_length_is_still_accepted():
    # 4 continuation bytes + terminator is the longest accepted prefix; this one
    # encodes 1 with redundant zero groups.
    assert parse(b"\x00\x02\x81\x80\x80\x80\x00x") == SyncUpdate(b"x")


# frame builders round trip through parse() ---------------------------------------------

_PAYLOADS = [b"", b"\x00", b"\x00\x00", b"abc", bytes(range(256)) * 3]


@pytest.mark.parametrize("payload", _PAYLOADS, ids=lambda p: f"{len(p)} bytes")
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (sync_step1_frame, SyncStep1),
        (sync_step2_frame, SyncStep2),
        (update_frame, SyncUpdate),
        (awareness_frame, AwarenessUpdate),
    ],
    ids=["sync_step1", "sync_step2", "update", "awareness"],
)
def test_frame_builders_round_trip_through_parse(build, expected, payload):
    frame = build(payload)

    assert isinstance(frame, bytes)
    assert parse(frame) == expected(payload)


def test_frame_builders_match_pycrdt_encoders():
    doc, updates = _doc_with_text("hello")
    awareness = Awareness(doc)
    payload = awareness.encode_awareness_update([doc.client_id])

    assert sync_step1_frame(doc.get_state()) == create_sync_message(doc)
    assert update_frame(updates[0]) == create_update_message(updates[0])
    assert awareness_frame(payload) == create_awareness_message(payload)
    reply = handle_sync_message(create_sync_message(Doc())[1:], doc)
    assert sync_step2_frame(doc.get_update(b"\x00")) == reply


def test_sync_step2_frame_is_understood_by_pycrdt():
    source, _ = _doc_with_text("shared text")
    target = Doc()

    reply = handle_sync_message(sync_step2_frame(source.get_update())[1:], target)

    assert reply is None
    assert str(target.get("text", type=Text)) == "shared text"


# document ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc_id",
    [
        "a",
        "Z",
        "0",
        "-",
        "x" * 128,
        "._~-",
        "report-2024_v1.2~draft",
        "ABCdef0123456789",
        "~" * 128,
    ],
    ids=lambda doc_id: doc_id if len(doc_id) < 30 else f"{doc_id[0]}*{len(doc_id)}",
)
def test_valid_document_ids_are_returned_unchanged(doc_id):
    assert validate_doc_id(doc_id) == doc_id


@pytest.mark.parametrize(
    "doc_id",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129 chars"),
        pytest.param("a b", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("../etc", id="parent path"),
        pytest.param("caf\u00e9", id="latin unicode"),
        pytest.param("\u0661\u0662", id="unicode digits"),
        pytest.param("\uff41", id="fullwidth letter"),
        pytest.param("doc\n", id="trailing newline"),
        pytest.param("\ndoc", id="leading newline"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a+b", id="plus"),
        pytest.param("a%20b", id="percent"),
        pytest.param("a:b", id="colon"),
        pytest.param("a?b", id="question mark"),
    ],
)
def test_invalid_document_ids_are_refused(doc_id):
    with pytest.raises(InvalidDocumentId) as caught:
        validate_doc_id(doc_id)

    assert caught.value.close_code == CloseCode.BAD_FRAME
    assert caught.value.http_status == 400


_GROUP_NAME = re.compile(r"[A-Za-z0-9._-]+")
_AWKWARD_IDS = ["a", "x" * 128, "~" * 128, "._~-", "A", "a~b", "a-b", "a.b", "a_b"]


def test_group_name_is_deterministic():
    assert group_name("collab", "doc-1") == group_name("collab", "doc-1")


def test_group_name_differs_for_distinct_ids():
    ids = [*_AWKWARD_IDS, "doc-1", "doc-2", "Doc-1", "doc-1."]
    names = {group_name("collab", doc_id) for doc_id in ids}

    assert len(names) == len(ids)


def test_group_name_differs_for_distinct_prefixes():
    assert group_name("collab", "doc") != group_name("other", "doc")


@pytest.mark.parametrize("doc_id", _AWKWARD_IDS, ids=lambda d: d if len(d) < 10 else f"{d[0]}*")
def test_group_name_is_a_legal_channel_group_name(doc_id):
    name = group_name("collab", doc_id)

    assert _GROUP_NAME.fullmatch(name), name
    assert len(name) < 100

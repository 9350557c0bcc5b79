"""The authorization matrix, through the gateway and at the editor directly.

`MATRIX` is the one list of every refusal the README promises ("Authentication"): each
way a request can be wrong, by each transport and route that reads or writes a document, by
both entry points (the gateway, and an editor reached around it). `test_refusal` checks
every cell against real processes: the exact close code or HTTP status, the reason or
JSON error, and that nothing of the document reached the client or the store. The README
states the number of cells; `test_readme_states_how_many_refusals_are_verified` keeps
them equal.

The services run once for the module, with JSON logs at DEBUG; the last test scans
everything they logged for tokens and document content.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from collab_common.tokens import issue_token, verify_token
from pycrdt import Doc, Text

from tests.support.processes import (
    ROOT,
    EditorInstance,
    GatewayInstance,
    PostgresDatabase,
    RedisServer,
    run_manage,
)
from tests.support.yclient import YClient, wait_until

SECRET = "matrix-secret-" + "x" * 60
GOOD_ORIGIN = "https://collab.example"
EVIL_ORIGIN = "https://evil.example"
DOC = "doc-a"
# Document text that must never reach a log line: unique per run, so that an appended
# log file of an earlier run cannot hide or fake anything.
MARKER = f"confidential-{uuid.uuid4().hex[:16]}"
AUTH_ENV = {"COLLAB_AUTH_REQUIRED": "1", "COLLAB_TOKEN_SECRET": SECRET}
# The most talkative production settings: JSON lines, every logger at DEBUG.
LOG_ENV = {"COLLAB_LOG_FORMAT": "json", "COLLAB_LOG_LEVEL": "DEBUG"}

MINTED: list[str] = []  # every token this module signs, for the log scan


def token(
    doc: str | None = DOC,
    *,
    perm: str = "write",
    prefix: str | None = None,
    secret: str = SECRET,
    ttl_seconds: int = 3600,
) -> str:
    if prefix is not None:
        doc = None
    value = issue_token(
        secret, subject="test", permission=perm, doc=doc, prefix=prefix, ttl_seconds=ttl_seconds
    )
    MINTED.append(value)
    return value


def hand_signed(algorithm: str) -> str:
    """Valid claims for DOC, signed (or not) with another algorithm than HS256."""
    claims = {"sub": "x", "perm": "write", "doc": DOC, "exp": 9_999_999_999}
    value = jwt.encode(claims, None if algorithm == "none" else SECRET, algorithm=algorithm)
    MINTED.append(value)
    return value


# --- the matrix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One way a request can be wrong, and what it must get."""

    name: str
    status: int  # HTTP status; the close code is 4000 + status
    message: str  # the close reason and the JSON "message"
    token: str | None = None  # None: send no token
    origin: str | None = GOOD_ORIGIN  # sent on sockets; on HTTP only when not GOOD_ORIGIN

    @property
    def error(self) -> str:
        return {401: "Unauthenticated", 403: "Forbidden"}[self.status]


INVALID_TOKENS = [
    Case("no token", 401, "a token is required"),
    Case("expired", 401, "token expired", token(ttl_seconds=-30)),
    Case(
        "bad signature",
        401,
        "invalid token (InvalidSignatureError)",
        token(secret="other-" + SECRET),
    ),
    Case("alg none", 401, "invalid token (InvalidAlgorithmError)", hand_signed("none")),
    Case("alg HS512", 401, "invalid token (InvalidAlgorithmError)", hand_signed("HS512")),
    Case("malformed", 401, "invalid token (DecodeError)", "not.a.token"),
]
OUT_OF_SCOPE = [
    Case("wrong document", 403, "the token does not cover this document", token("doc-b")),
    Case("wrong prefix", 403, "the token does not cover this document", token(prefix="doc-b")),
]
READ_ONLY = Case("read-only writing", 403, "the token is read-only", token(perm="read"))
BAD_ORIGIN = Case("disallowed Origin", 403, "origin not allowed", token(), EVIL_ORIGIN)
NO_ORIGIN = Case("no Origin (socket)", 403, "origin not allowed", token(), None)

SOCKET = "WS /ws/docs/<id>"
DETAIL = "GET /api/docs/<id>"
STATE = "GET /api/docs/<id>/state"
POST = "POST /api/docs/<id>/updates"
LISTING = "GET /api/docs"
ROUTES = (SOCKET, DETAIL, STATE, POST, LISTING)
ENTRIES = ("gateway", "editor")


def cases_for(route: str) -> list[Case]:
    """Every case refused on `route` (the README's promises, route by route)."""
    if route == SOCKET:
        # A read-only socket stays open: its updates are answered with the y-protocols
        # "permission denied" message, neither stored nor relayed (checked as a cell too).
        return [*INVALID_TOKENS, *OUT_OF_SCOPE, READ_ONLY, BAD_ORIGIN, NO_ORIGIN]
    if route == LISTING:
        # A valid token for other documents lists only those (test_listing_...); a
        # read-only token may list. Only invalid tokens and foreign pages are refused.
        return [*INVALID_TOKENS, BAD_ORIGIN]
    if route == POST:
        return [*INVALID_TOKENS, *OUT_OF_SCOPE, READ_ONLY, BAD_ORIGIN]
    return [*INVALID_TOKENS, *OUT_OF_SCOPE, BAD_ORIGIN]  # reading: read-only may read


@dataclass(frozen=True)
class Cell:
    case: Case
    route: str
    entry: str

    @property
    def id(self) -> str:
        return f"{self.entry}|{self.route}|{self.case.name}"


MATRIX = [
    Cell(case, route, entry) for entry in ENTRIES for route in ROUTES for case in cases_for(route)
]


# --- the services, once for the module ----------------------------------------------------


@dataclass
class Stack:
    editor: EditorInstance
    gateway: GatewayInstance
    log_offsets: dict[Path, int]

    def base(self, entry: str) -> str:
        return (self.gateway if entry == "gateway" else self.editor).base_url

    def ws(self, entry: str) -> str:
        return (self.gateway if entry == "gateway" else self.editor).ws_url

    def logs(self) -> str:
        """Everything both processes logged since they started (the files are appended)."""
        text = ""
        for path, offset in self.log_offsets.items():
            with path.open("rb") as log:
                log.seek(offset)
                text += log.read().decode(errors="replace")
        return text


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    redis = RedisServer().start()
    database = PostgresDatabase().create()
    started: list[EditorInstance | GatewayInstance] = []
    try:
        editor = EditorInstance(
            "editor-auth",
            database_url=database.url,
            redis_url=redis.url,
            extra_env={**AUTH_ENV, **LOG_ENV, "COLLAB_ALLOWED_ORIGINS": GOOD_ORIGIN},
        )
        offsets = {editor.log_path: _size(editor.log_path)}
        started.append(editor.start())
        gateway = GatewayInstance(
            "gateway-auth",
            upstreams=[editor.base_url],
            extra_env={**AUTH_ENV, **LOG_ENV, "GATEWAY_ALLOWED_ORIGINS": GOOD_ORIGIN},
        )
        offsets[gateway.log_path] = _size(gateway.log_path)
        started.append(gateway.start())
        # The document every refusal aims at exists and holds MARKER: a check that let a
        # request through would answer with it.
        status, _ = http("POST", f"{editor.base_url}/api/docs/{DOC}/updates", body=update(MARKER))
        assert status == 401
        status, _ = http(
            "POST", f"{editor.base_url}/api/docs/{DOC}/updates", token(), body=update(MARKER)
        )
        assert status == 200
        yield Stack(editor, gateway, offsets)
    finally:
        for process in reversed(started):
            process.kill()
        database.drop()
        redis.stop()


def update(text: str) -> bytes:
    doc = Doc()
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


def http(
    method: str,
    url: str,
    bearer: str | None = None,
    *,
    body: bytes | None = None,
    origin: str | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    if origin:
        request.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stored_text(stack: Stack, doc_id: str = DOC) -> str:
    status, state = http("GET", f"{stack.editor.base_url}/api/docs/{doc_id}/state", token(doc_id))
    assert status == 200, state
    doc = Doc()
    doc.apply_update(state)
    return str(doc.get("text", type=Text))


def origin_header(origin: str | None = GOOD_ORIGIN) -> dict[str, str]:
    return {"Origin": origin} if origin else {}


# --- every cell ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", MATRIX, ids=[cell.id for cell in MATRIX])
async def test_refusal(stack: Stack, cell: Cell) -> None:
    if cell.route != SOCKET:
        _check_http(stack, cell)
    elif cell.case is READ_ONLY:
        await _check_read_only_socket(stack, cell.entry)
    else:
        await _check_socket(stack, cell)


async def _check_socket(stack: Stack, cell: Cell) -> None:
    case = cell.case
    url = f"{stack.ws(cell.entry)}/{DOC}" + (f"?token={case.token}" if case.token else "")
    client = YClient(url)
    await client.connect(wait_synced=False, headers=origin_header(case.origin))
    await asyncio.wait_for(client.closed.wait(), 10)
    await client.close()
    assert (client.close_code, client.close_reason) == (4000 + case.status, case.message)
    assert client.received_frames == [], "a refused socket received frames"
    if cell.entry == "gateway":
        # Refused by the gateway itself, before dialling an editor (a relayed socket's
        # handshake names its editor): the editor's own check is another cell.
        assert client.upstream == "", "the gateway relayed a socket it must refuse"


async def _check_read_only_socket(stack: Stack, entry: str) -> None:
    doc_id = f"ro-{entry}"
    base = f"{stack.ws(entry)}/{doc_id}"
    good = origin_header()
    writer = await YClient(f"{base}?token={token(doc_id)}").connect(headers=good)
    reader = await YClient(f"{base}?token={token(doc_id, perm='read')}").connect(headers=good)
    writer.insert("by the writer;")
    await wait_until(lambda: str(reader.text) == "by the writer;", what="reader receives")

    reader.insert("by the reader;")  # an Update frame: answered with "permission denied"
    await wait_until(
        lambda: any(frame[0] == 2 for frame in reader.received_frames),
        what="permission-denied message",
    )
    # A read-only client with offline edits: they travel in its SyncStep2 (ignored) and
    # as an Update (refused).
    offline = YClient(f"{base}?token={token(doc_id, perm='read')}")
    offline.insert("offline by a reader;")
    await offline.connect(headers=good)
    await wait_until(
        lambda: any(frame[0] == 2 for frame in offline.received_frames),
        what="permission-denied message for the offline edit",
    )
    writer.insert("again;")
    await wait_until(lambda: "again;" in str(reader.text), what="reader still receives")
    await wait_until(lambda: "again;" in str(offline.text), what="offline reader receives")
    await asyncio.sleep(0.3)  # a relay of a refused edit would have arrived by now
    assert str(writer.text) == "by the writer;again;", "a read-only edit was relayed"
    assert not reader.closed.is_set() and not offline.closed.is_set()
    assert stored_text(stack, doc_id) == "by the writer;again;", "a read-only edit was stored"
    late = await YClient(f"{base}?token={token(doc_id)}").connect(headers=good)
    assert str(late.text) == "by the writer;again;"
    for client in (writer, reader, offline, late):
        await client.close()


def _check_http(stack: Stack, cell: Cell) -> None:
    case = cell.case
    method, path = cell.route.split(" ")
    url = stack.base(cell.entry) + path.replace("<id>", DOC)
    refused_text = f"refused {cell.id}"
    body = update(refused_text) if method == "POST" else None
    origin = case.origin if case.origin != GOOD_ORIGIN else None
    status, answer = http(method, url, case.token, body=body, origin=origin)
    assert status == case.status, answer
    assert json.loads(answer) == {"error": case.error, "message": case.message}
    assert MARKER.encode() not in answer
    if method == "POST":
        assert refused_text not in stored_text(stack), "a refused update was stored"


# --- the counterparts: the same requests, put right, are served --------------------------


@pytest.mark.parametrize("entry", ENTRIES)
async def test_valid_requests_are_served_on_every_route(stack: Stack, entry: str) -> None:
    """Each refusal above differs from a served request only in what the case names."""
    base = stack.base(entry)
    for method, path in [route.split(" ") for route in (DETAIL, STATE, LISTING)]:
        for origin in (None, GOOD_ORIGIN):  # no Origin (a backend), or the listed one
            status, answer = http(method, base + path.replace("<id>", DOC), token(), origin=origin)
            assert status == 200, (method, path, answer)
    posted = f"posted via {entry};"
    status, answer = http(
        "POST", f"{base}/api/docs/{DOC}/updates", token(), body=update(posted), origin=GOOD_ORIGIN
    )
    assert status == 200 and json.loads(answer)["changed"] is True
    assert posted in stored_text(stack)
    client = await YClient(f"{stack.ws(entry)}/{DOC}?token={token(perm='read')}").connect(
        headers=origin_header()
    )
    assert MARKER in str(client.text) and posted in str(client.text)
    await client.close()


async def test_tokens_are_accepted_from_header_and_cookie_and_prefix_scopes(stack: Stack) -> None:
    good = origin_header()
    for entry in ENTRIES:
        base = stack.ws(entry)
        by_header = await YClient(f"{base}/{DOC}").connect(
            headers={**good, "Authorization": f"Bearer {token()}"}
        )
        by_cookie = await YClient(f"{base}/{DOC}").connect(
            headers={**good, "Cookie": f"theme=dark; collab_token={token(perm='read')}"}
        )
        by_prefix = await YClient(f"{base}/team-a.notes?token={token(prefix='team-a.')}").connect(
            headers=good
        )
        for client in (by_header, by_cookie, by_prefix):
            await client.close()


@pytest.mark.parametrize("entry", ENTRIES)
def test_listing_holds_only_the_documents_the_token_covers(stack: Stack, entry: str) -> None:
    listing = f"{stack.base(entry)}/api/docs"
    status, answer = http("GET", listing, token("doc-b", perm="read"))
    assert status == 200 and json.loads(answer)["documents"] == []
    status, answer = http("GET", listing, token(prefix="team-b."))
    assert status == 200 and json.loads(answer)["documents"] == []
    status, answer = http("GET", listing, token(perm="read"))
    assert [doc["id"] for doc in json.loads(answer)["documents"]] == [DOC]


async def test_read_only_clients_still_share_presence(stack: Stack) -> None:
    url, good = f"{stack.gateway.ws_url}/{DOC}", origin_header()
    writer = await YClient(f"{url}?token={token()}").connect(headers=good)
    reader = await YClient(f"{url}?token={token(perm='read')}").connect(headers=good)
    await reader.set_presence({"user": {"name": "Reader"}})
    rid = reader.awareness.client_id
    await wait_until(lambda: rid in writer.remote_presence(), what="reader presence")
    for client in (writer, reader):
        await client.close()


def test_readme_states_how_many_refusals_are_verified() -> None:
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"(\d+) refusals", readme)
    assert stated is not None, "the README's Authentication section states no count"
    assert int(stated.group(1)) == len(MATRIX)
    assert len(MATRIX) == 92  # 2 entries x (11 socket + 9 + 9 + 10 + 7 HTTP cells)


# --- logs: last, so that they hold the whole module's traffic ----------------------------


def _content_forms(marker: str) -> list[str]:
    """Pieces of `marker` as they could appear in a log line: the text, and every run of 6
    bytes of its random part hex-dumped (frame dumps show a frame's first and last bytes,
    so a frame holding the marker shows only part of it)."""
    unique = marker.rsplit("-", 1)[-1].encode()
    runs = [unique[start : start + 6] for start in range(len(unique) - 5)]
    forms = [marker, unique.decode()]
    for run in runs:
        forms += [run.hex(" "), run.hex(), run.hex(" ").upper(), run.hex().upper()]
    return forms


async def test_tokens_and_document_content_never_reach_the_logs(stack: Stack) -> None:
    """A full run (every matrix cell above, valid and refused traffic with MARKER as
    content, at DEBUG) leaves no token, signature, secret or content in any log line."""
    good = origin_header()
    used = [token(), token(perm="read")]
    writer = await YClient(f"{stack.gateway.ws_url}/{DOC}?token={used[0]}").connect(headers=good)
    direct = await YClient(f"{stack.editor.ws_url}/{DOC}?token={used[1]}").connect(
        headers={**good, "Cookie": f"collab_token={used[1]}"}
    )
    more = f"more-{MARKER}"
    writer.insert(more)
    await wait_until(lambda: more in str(direct.text), what="relay")
    direct.insert(f"refused-{MARKER}")  # read-only: refused and logged, without content
    await wait_until(lambda: any(frame[0] == 2 for frame in direct.received_frames))
    # Bad frames carrying content: a truncated one, and an update Yjs cannot decode.
    await direct.send_raw(b"\x00\x02\x7f" + MARKER.encode())
    await asyncio.wait_for(direct.closed.wait(), 10)
    await writer.send_raw(b"\x00\x02" + bytes([len(MARKER) + 2]) + b"\xff\xff" + MARKER.encode())
    await asyncio.wait_for(writer.closed.wait(), 10)
    assert (direct.close_code, writer.close_code) == (4400, 4400)
    await writer.close()
    await direct.close()
    for entry in ENTRIES:
        base = stack.base(entry)
        foreign = YClient(f"{stack.ws(entry)}/{DOC}?token={used[0]}")
        await foreign.connect(wait_synced=False, headers=origin_header(EVIL_ORIGIN))
        await asyncio.wait_for(foreign.closed.wait(), 10)
        await foreign.close()
        assert http("GET", f"{base}/api/docs/{DOC}/state?token={used[0]}")[0] == 200
        assert http("GET", f"{base}/api/docs/{DOC}?token={used[0]}", origin=EVIL_ORIGIN)[0] == 403
        status, _ = http("POST", f"{base}/api/docs/{DOC}/updates?token={used[1]}", body=b"\x00")
        assert status == 403
        bad = b"\xff\xff" + MARKER.encode()
        status, _ = http("POST", f"{base}/api/docs/{DOC}/updates?token={used[0]}", body=bad)
        assert status == 400
    await asyncio.sleep(0.5)  # let both processes write their last lines

    logs = stack.logs()
    lines = [line for line in logs.splitlines() if line.strip()]
    for line in lines:
        json.loads(line)  # JSON logs: every line is one object
    assert "[redacted]" in logs  # handshake lines were written, without their tokens
    assert '"closing connection: 4403 origin not allowed"' in logs  # the matrix ran here
    secrets = [SECRET, *_content_forms(MARKER)]
    for value in dict.fromkeys(MINTED + used):
        if value == "not.a.token":
            continue
        secrets.append(value)
        signature = value.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            secrets.append(signature)
    decoded = "\n".join(json.dumps(json.loads(line), ensure_ascii=True) for line in lines)
    leaks = [value for value in secrets if value in logs or value in decoded]
    where = [line for line in lines if any(value in line for value in leaks)][:3]
    assert not leaks, f"{len(leaks)} secrets in the logs, e.g. in: {where}"


# --- minting and start-up ------------------------------------------------------------------


def test_issue_token_prints_only_a_token_that_verifies():
    out = run_manage(
        ["issue_token", "--doc", "doc-a", "--perm", "read", "--ttl", "120"],
        {"COLLAB_TOKEN_SECRET": SECRET},
    )
    grant = verify_token(SECRET, out.strip())
    assert out.strip() == out.rstrip("\n") and "\n" not in out.strip()
    assert (grant.doc, grant.permission) == ("doc-a", "read")
    by_prefix = verify_token(
        SECRET,
        run_manage(["issue_token", "--prefix", "team/"], {"COLLAB_TOKEN_SECRET": SECRET}).strip(),
    )
    assert (by_prefix.prefix, by_prefix.permission) == ("team/", "write")


def test_issue_token_without_a_secret_names_the_variable():
    with pytest.raises(RuntimeError, match="COLLAB_TOKEN_SECRET"):
        run_manage(["issue_token", "--doc", "doc-a"], {})


def test_editor_refuses_to_start_with_auth_on_and_no_secret(pg_database):
    with pytest.raises(RuntimeError, match="COLLAB_TOKEN_SECRET must be set"):
        run_manage(["check"], {"COLLAB_AUTH_REQUIRED": "1", "DATABASE_URL": pg_database.url})


@pytest.mark.parametrize("origin", ["https://collab.example/", "collab.example"])
def test_an_origin_no_header_can_equal_stops_the_editor_naming_the_variable(origin: str) -> None:
    # Origins are compared exactly with the header (as GATEWAY_ALLOWED_ORIGINS).
    with pytest.raises(RuntimeError, match="COLLAB_ALLOWED_ORIGINS"):
        run_manage(["check"], {"COLLAB_ALLOWED_ORIGINS": f"{GOOD_ORIGIN},{origin}"})

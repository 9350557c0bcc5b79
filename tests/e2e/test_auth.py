"""The authorization matrix, through the gateway and at the editor directly."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import jwt
import pytest
from collab_common.tokens import issue_token
from pycrdt import Doc, Text

from tests.support.processes import EditorInstance, GatewayInstance, run_manage
from tests.support.yclient import YClient, wait_until

SECRET = "matrix-secret-" + "x" * 60
AUTH_ENV = {"COLLAB_AUTH_REQUIRED": "1", "COLLAB_TOKEN_SECRET": SECRET}


def token(
    doc: str | None = "doc-a", *, perm: str = "write", prefix: str | None = None, **kw
) -> str:
    if prefix is not None:
        doc = None
    return issue_token(SECRET, subject="test", permission=perm, doc=doc, prefix=prefix, **kw)


def refused_tokens() -> dict[str, tuple[str | None, int]]:
    """Each way a token can fail for document `doc-a`, with the close code it must get."""
    now_claims = {"sub": "x", "perm": "write", "doc": "doc-a", "exp": 9_999_999_999}
    return {
        "no token": (None, 4401),
        "expired": (token(ttl_seconds=-30), 4401),
        "bad signature": (
            issue_token("other-" + SECRET, subject="t", permission="write", doc="doc-a"),
            4401,
        ),
        "alg none": (jwt.encode(now_claims, None, algorithm="none"), 4401),
        "HS512": (jwt.encode(now_claims, SECRET, algorithm="HS512"), 4401),
        "garbage": ("not.a.token", 4401),
        "wrong document": (token("doc-b"), 4403),
        "wrong prefix": (token(prefix="team-b/"), 4403),
    }


@pytest.fixture
def secured(editors, gateways, pg_database, redis_server):
    editor = EditorInstance(
        "editor-auth", database_url=pg_database.url, redis_url=redis_server.url, extra_env=AUTH_ENV
    ).start()
    editors.append(editor)
    gateway = GatewayInstance(
        "gateway-auth", upstreams=[editor.base_url], extra_env=AUTH_ENV
    ).start()
    gateways.append(gateway)
    return editor, gateway


def ws_urls(editor: EditorInstance, gateway: GatewayInstance) -> dict[str, str]:
    return {"gateway": gateway.ws_url, "editor": editor.ws_url}


def http(method: str, url: str, *, bearer: str | None = None, body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method)
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def test_every_bad_token_is_refused_on_sockets_through_the_gateway_and_at_the_editor(secured):
    editor, gateway = secured
    checked = 0
    for where, base in ws_urls(editor, gateway).items():
        for case, (bad, code) in refused_tokens().items():
            url = f"{base}/doc-a" + (f"?token={bad}" if bad else "")
            client = YClient(url)
            await client.connect(wait_synced=False)
            await asyncio.wait_for(client.closed.wait(), 10)
            assert client.close_code == code, f"{case} via {where}: {client.close_code}"
            assert not client.synced.is_set(), f"{case} via {where} received the document"
            await client.close()
            checked += 1
        good = await YClient(f"{base}/doc-a?token={token()}").connect()
        await good.close()
    assert checked == 16


async def test_tokens_are_accepted_from_header_and_cookie_and_prefix_scopes(secured):
    editor, gateway = secured
    for base in ws_urls(editor, gateway).values():
        by_header = await YClient(f"{base}/doc-a").connect(
            headers={"Authorization": f"Bearer {token()}"}
        )
        by_cookie = await YClient(f"{base}/doc-a").connect(
            headers={"Cookie": f"theme=dark; collab_token={token(perm='read')}"}
        )
        by_prefix = await YClient(f"{base}/team-a.notes?token={token(prefix='team-a.')}").connect()
        for client in (by_header, by_cookie, by_prefix):
            await client.close()


async def test_read_only_updates_are_refused_never_stored_nor_relayed(secured):
    editor, gateway = secured
    for where, base in ws_urls(editor, gateway).items():
        doc_id = f"ro-{where}"
        writer = await YClient(f"{base}/{doc_id}?token={token(doc_id)}").connect()
        reader = await YClient(f"{base}/{doc_id}?token={token(doc_id, perm='read')}").connect()
        writer.insert("by the writer;")
        await wait_until(lambda r=reader: str(r.text) == "by the writer;", what="reader receives")

        reader.insert("by the reader;")  # the client sends it; the server must refuse it
        await wait_until(
            lambda r=reader: any(frame[0] == 2 for frame in r.received_frames),
            what="permission-denied message",
        )
        writer.insert("again;")
        await wait_until(lambda r=reader: "again;" in str(r.text), what="reader still receives")
        await asyncio.sleep(0.3)  # a relay of the refused edit would have arrived by now
        assert "by the reader" not in str(writer.text)

        status, state = http(
            "GET", f"{editor.base_url}/api/docs/{doc_id}/state", bearer=token(doc_id, perm="read")
        )
        stored = Doc()
        stored.apply_update(state)
        assert status == 200
        assert str(stored.get("text", type=Text)) == "by the writer;again;"
        late = await YClient(f"{base}/{doc_id}?token={token(doc_id)}").connect()
        assert "by the reader" not in str(late.text)
        for client in (writer, reader, late):
            await client.close()


async def test_read_only_clients_still_share_presence(secured):
    _, gateway = secured
    writer = await YClient(f"{gateway.ws_url}/doc-a?token={token()}").connect()
    reader = await YClient(f"{gateway.ws_url}/doc-a?token={token(perm='read')}").connect()
    await reader.set_presence({"user": {"name": "Reader"}})
    rid = reader.awareness.client_id
    await wait_until(lambda: rid in writer.remote_presence(), what="reader presence")
    for client in (writer, reader):
        await client.close()


@pytest.mark.parametrize("where", ["gateway", "editor"])
async def test_http_api_enforces_the_same_matrix(secured, where):
    editor, gateway = secured
    base = gateway.base_url if where == "gateway" else editor.base_url
    update = Doc()
    update.get("text", type=Text).insert(0, "posted")
    body = update.get_update()

    assert http("POST", f"{base}/api/docs/doc-a/updates", body=body)[0] == 401
    for case, (bad, code) in refused_tokens().items():
        expected = 401 if code == 4401 else 403
        status, answer = http("GET", f"{base}/api/docs/doc-a/state", bearer=bad)
        assert status == expected, f"{case}: {status}"
        assert "message" in json.loads(answer)
    assert (
        http("POST", f"{base}/api/docs/doc-a/updates", body=body, bearer=token(perm="read"))[0]
        == 403
    )
    assert http("POST", f"{base}/api/docs/doc-a/updates", body=body, bearer=token())[0] == 200
    assert http("GET", f"{base}/api/docs/doc-a/state", bearer=token(perm="read"))[0] == 200
    status, listing = http("GET", f"{base}/api/docs", bearer=token("doc-b", perm="read"))
    assert status == 200 and json.loads(listing)["documents"] == []
    status, listing = http("GET", f"{base}/api/docs", bearer=token(perm="read"))
    assert [doc["id"] for doc in json.loads(listing)["documents"]] == ["doc-a"]


async def test_tokens_and_document_content_never_reach_the_logs(secured):
    editor, gateway = secured
    secret_text = "confidential-content-7f3a"
    used = [token(), token(perm="read")]
    writer = await YClient(f"{gateway.ws_url}/doc-a?token={used[0]}").connect()
    direct = await YClient(f"{editor.ws_url}/doc-a?token={used[1]}").connect()
    writer.insert(secret_text)
    await wait_until(lambda: secret_text in str(direct.text), what="relay")
    await direct.send_raw(b"\x00\x02\x05\x01")  # a bad frame: logged refusal, no content
    await asyncio.wait_for(direct.closed.wait(), 10)
    for client in (writer,):
        await client.close()
    http("GET", f"{gateway.base_url}/api/docs/doc-a/state?token={used[0]}")
    await asyncio.sleep(0.3)
    logs = editor.logs() + gateway.logs()
    assert "[redacted]" in logs  # the handshake lines were there, without their tokens
    for value in [*used, SECRET, secret_text]:
        assert value not in logs


def test_issue_token_prints_only_a_token_that_verifies():
    out = run_manage(
        ["issue_token", "--doc", "doc-a", "--perm", "read", "--ttl", "120"],
        {"COLLAB_TOKEN_SECRET": SECRET},
    )
    from collab_common.tokens import verify_token

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

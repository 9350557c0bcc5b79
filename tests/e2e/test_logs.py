"""Structured logs: one JSON object per line, with connection and document ids."""

from __future__ import annotations

import asyncio
import json

from tests.support.processes import EditorInstance, GatewayInstance
from tests.support.yclient import YClient


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


async def test_json_logs_carry_connection_and_document_ids_in_both_services(
    editors, gateways, pg_database, redis_server
):
    env = {"COLLAB_LOG_FORMAT": "json"}
    editor = EditorInstance(
        "editor-json", database_url=pg_database.url, redis_url=redis_server.url, extra_env=env
    ).start()
    editors.append(editor)
    gateway = GatewayInstance("gateway-json", upstreams=[editor.base_url], extra_env=env).start()
    gateways.append(gateway)

    client = await YClient(f"{gateway.ws_url}/json-logs").connect()
    await client.send_raw(b"\x00\x02\x05\x01")  # refused: logged with its ids
    await asyncio.wait_for(client.closed.wait(), 10)
    refused = YClient(f"{gateway.ws_url}/bad%20id")  # refused by the gateway
    await refused.connect(wait_synced=False)
    await asyncio.wait_for(refused.closed.wait(), 10)
    await asyncio.sleep(0.3)

    editor_lines = json_lines(editor.logs())
    closing = [line for line in editor_lines if line["message"].startswith("closing connection")]
    assert closing, "the refusal was not logged"
    assert closing[-1]["doc_id"] == "json-logs"
    assert len(closing[-1]["conn_id"]) == 12
    assert {"time", "level", "logger", "process"} <= closing[-1].keys()

    gateway_lines = json_lines(gateway.logs())
    refusal = [line for line in gateway_lines if line["message"].startswith("refused connection")]
    assert refusal and refusal[-1]["conn_id"] != "-"

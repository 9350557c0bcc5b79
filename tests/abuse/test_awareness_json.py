"""Presence that is not JSON for a browser is refused, never relayed.

Awareness states are JSON text. pycrdt decodes them with Python's json module, which
accepts NaN and Infinity; JavaScript's JSON.parse rejects those tokens, so the
y-protocols awareness decoder of every browser peer would throw on the message, and
the states after it in a snapshot would be lost. (Checked with the project's own
yjs/y-protocols under Node: "SyntaxError: Unexpected token 'N'".) The room refuses
such a state with 4400 before anything else sees it.
"""

from __future__ import annotations

from pycrdt import Decoder

from tests.abuse.editor import start_editor
from tests.fuzz.frames import awareness_frame, awareness_payload, strict_json
from tests.support.yclient import YClient, wait_until


def states_in(frame: bytes) -> list[str]:
    decoder = Decoder(frame[1:])
    payload = Decoder(decoder.read_message() or b"")
    states = []
    for _ in range(payload.read_var_uint()):
        payload.read_var_uint()
        payload.read_var_uint()
        states.append(payload.read_var_string())
    return states


async def test_presence_a_browser_cannot_parse_is_refused_or_never_relayed(editors, pg_database):
    editor = start_editor(editors, pg_database)
    url = f"{editor.ws_url}/presence"
    peer = await YClient(url).connect()
    await peer.set_presence({"user": {"name": "Ada"}})
    hostile = await YClient(url).connect()
    await hostile.send_raw(awareness_frame(awareness_payload([(4242, 1, '{"cursor":NaN}')])))
    late = await YClient(url).connect()
    await wait_until(
        lambda: hostile.closed.is_set() or 4242 in peer.awareness.states,
        what="the hostile presence to be refused or relayed",
    )
    relayed = [
        state
        for client in (peer, late)
        for frame in client.received_frames
        if frame[:1] == b"\x01"
        for state in states_in(frame)
    ]
    broken = []
    for state in relayed:
        try:
            if state:
                strict_json(state)
        except ValueError:
            broken.append(state)
    assert hostile.close_code == 4400 or not broken, (
        f"the server relayed presence states that JSON.parse rejects: {broken} "
        "(every browser peer's awareness decoder throws on them)"
    )
    assert not peer.closed.is_set() and not late.closed.is_set()
    for client in (peer, hostile, late):
        await client.close()

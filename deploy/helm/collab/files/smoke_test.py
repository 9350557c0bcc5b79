"""`helm test`: the gateway is ready and relays a WebSocket upgrade to an editor.

Runs in the editor image. Environment: GATEWAY_URL (http://host:port), COLLAB_AUTH_REQUIRED
and COLLAB_TOKEN_SECRET (a short-lived read token is signed when auth is on),
GATEWAY_ORIGIN (sent as Origin when the gateway restricts origins).
"""

import os
import sys
import time
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

DOC = "helm-test"
base = os.environ["GATEWAY_URL"].rstrip("/")

deadline = time.monotonic() + float(os.environ.get("READY_TIMEOUT_SECONDS", "60"))
while True:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            print(f"GET {base}/readyz: {response.status}")
            break
    except Exception as error:  # 503 while no editor is ready, or not reachable yet
        if time.monotonic() > deadline:
            sys.exit(f"the gateway is not ready: {error}")
        time.sleep(2)

query = ""
if os.environ.get("COLLAB_AUTH_REQUIRED", "").lower() == "true":
    from collab_common.tokens import issue_token

    token = issue_token(
        os.environ["COLLAB_TOKEN_SECRET"],
        subject="helm-test",
        permission="read",
        doc=DOC,
        ttl_seconds=300,
    )
    query = f"?token={token}"

url = f"{base.replace('http', 'ws', 1)}/ws/docs/{DOC}"
with connect(url + query, origin=os.environ.get("GATEWAY_ORIGIN") or None, open_timeout=10) as ws:
    print(f"GET {url}: 101 Switching Protocols")
    try:
        first = ws.recv(timeout=10)
    except ConnectionClosed as closed:  # 4401/4403: the token; 1013: no editor
        sys.exit(f"the gateway closed the socket: {closed.rcvd}")
# An editor opens every connection with SyncStep1: message type 0 (sync), step 0.
if not isinstance(first, bytes) or first[:2] != b"\x00\x00":
    sys.exit(f"expected SyncStep1 from the editor, got {first[:16]!r}")
print("the editor answered through the gateway with SyncStep1")

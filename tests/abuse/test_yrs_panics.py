"""A frame that makes yrs panic, then ordinary updates: the room hangs for good
(KNOWN BUG: this test fails).

`Room.apply_update` contains the panic (PanicException becomes BadUpdate, 4400, as it
must) but keeps using the Doc that the unwinding left half-modified. With the document
below, a later valid update (a client syncing its whole copy) then sends yrs into an
endless loop inside `apply_update`: in the editor the worker's event loop never runs
again, every socket on it goes silent, and gunicorn replaces it only after its 60 s
heartbeat timeout.

The run is in a subprocess: the loop holds the GIL, so it would take the test process
with it. It hangs every time here without RUST_BACKTRACE (as in production); with
RUST_BACKTRACE=1 it does not, and a gunicorn worker did not hang on the same frames
either: the outcome depends on the state the unwinding left, which is the bug. The
inputs: tests/fuzz/corpus/yrs-panic-then-hang.bin, tests/abuse/data/panic-*.bin.
Diagnosis and proposed fix: tests/fuzz/README.md ("Known bugs").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import ROOT, editor_env

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from collab.errors import BadUpdate
    from collab.room import Room
    from pycrdt import Doc, Text

    data = Path(sys.argv[1])
    frame = (data.parent.parent / "fuzz" / "corpus" / "yrs-panic-then-hang.bin").read_bytes()
    room = Room("poisoned", max_document_bytes=64 * 1024 * 1024)
    room.apply_update((data / "panic-document.bin").read_bytes())
    try:
        room.apply_update(frame[3:])  # the update inside the frame
    except BadUpdate:
        print("refused", flush=True)
    later = Doc(client_id=999)
    later.get("text", type=Text).insert(0, "later")
    room.apply_update(later.get_update())
    room.apply_update((data / "panic-later-sync.bin").read_bytes())
    print("applied", flush=True)
    """
)


# Known bug, kept as a test that fails until it is fixed (strict: a fix makes it XPASS).
@pytest.mark.xfail(
    strict=True,
    reason="the room keeps the Doc a yrs panic left broken: tests/fuzz/README.md bug 3",
)
def test_a_room_applies_valid_updates_after_a_frame_that_made_yrs_panic():
    env = editor_env({"PYTHONPATH": str(ROOT / "services" / "editor"), "RUST_BACKTRACE": "0"})
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(Path(__file__).parent / "data")],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout
        raise AssertionError(
            f"after a frame that made yrs panic (output so far: {out!r}), the room never "
            "finished applying two valid updates: yrs loops forever in the Doc the panic left "
            "behind (in the editor: the worker hangs until gunicorn kills it)"
        ) from None
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["refused", "applied"]

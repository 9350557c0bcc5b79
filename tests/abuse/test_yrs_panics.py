"""A frame that makes yrs panic, then ordinary updates: the room must go on.

`Room.apply_update` contains the panic (PanicException becomes BadUpdate, 4400) and
marks the room damaged: the unwinding can leave the Doc half-modified, and with the
document below a later valid update (a client syncing its whole copy) then sends yrs
into an endless loop inside `apply_update` (in the editor: a worker whose event loop
never runs again until gunicorn's heartbeat kills it). The registry therefore replaces
the Doc with the stored document before anyone uses the room again (`replace_doc`);
this test does what the registry does and checks that the same updates then apply.
Without the replacement the script below hangs every time here (without
RUST_BACKTRACE, as in production).

The run is in a subprocess: the loop holds the GIL, so it would take the test process
with it. The inputs: tests/fuzz/corpus/yrs-panic-then-hang.bin, tests/abuse/data/panic-*.bin.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
    stored = (data / "panic-document.bin").read_bytes()
    room = Room("poisoned", max_document_bytes=64 * 1024 * 1024)
    room.apply_update(stored, from_client=False)
    try:
        room.apply_update(frame[3:])  # the update inside the frame
    except BadUpdate as refused:
        print("refused", "damaged" if room.damaged else "intact", flush=True)
        assert refused.partial is None  # nothing of it reached the store
    if sys.argv[2] == "replace":
        room.replace_doc(stored)  # what the registry does with a damaged room
    later = Doc(client_id=999)
    later.get("text", type=Text).insert(0, "later")
    room.apply_update(later.get_update())
    room.apply_update((data / "panic-later-sync.bin").read_bytes())
    print("applied", flush=True)
    """
)


def test_a_room_applies_valid_updates_after_a_frame_that_made_yrs_panic():
    env = editor_env({"PYTHONPATH": str(ROOT / "services" / "editor"), "RUST_BACKTRACE": "0"})
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(Path(__file__).parent / "data"), "replace"],
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
    assert result.stdout.split() == ["refused", "damaged", "applied"]

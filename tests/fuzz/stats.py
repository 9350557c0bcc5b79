"""Counts of what the fuzz and abuse tests actually did, printed at the end of the run."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fuzz.frames import Verdict

COUNTS: collections.Counter[str] = collections.Counter()
PRINTED = False
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CRASHES = ARTIFACTS / "fuzz-findings"


def record(name: str, value: int = 1) -> None:
    COUNTS[name] += value


def summary_lines() -> list[str]:
    return [f"{name}: {value}" for name, value in sorted(COUNTS.items())]


def save_finding(label: str, frame: bytes | str) -> Path:
    """Keep an input that broke a property, for the corpus (tests/fuzz/corpus/)."""
    CRASHES.mkdir(parents=True, exist_ok=True)
    data = frame.encode() if isinstance(frame, str) else frame
    suffix = ".txt" if isinstance(frame, str) else ".bin"
    path = CRASHES / f"{label}-{abs(hash(data)) % 10**10:010d}{suffix}"
    path.write_bytes(data)
    return path


def write_json() -> None:
    if COUNTS:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "fuzz-counts.json").write_text(json.dumps(dict(COUNTS), indent=2) + "\n")


@dataclass(kw_only=True)
class Tally:
    """What a fuzz campaign sent, what the oracle expected of it, and what went wrong."""

    sent: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # close code: connections
    partial: int = 0  # refused updates whose valid prefix was kept
    pending: int = 0
    waits: int = 0
    panics: int = 0
    overclaims: int = 0
    rebuilds: int = 0
    mismatches: list[str] = field(default_factory=list)

    def count(self, verdict: Verdict) -> None:
        """One more frame sent, with the oracle's verdict on it."""
        self.sent += 1
        self.pending += verdict.pending
        self.waits += verdict.waits
        self.panics += verdict.panic
        self.overclaims += verdict.overclaims

    def refuse(self, code: int) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1

"""Counts of what the fuzz and abuse tests actually did, printed at the end of the run."""

from __future__ import annotations

import collections
import json
from pathlib import Path

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

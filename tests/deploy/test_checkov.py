"""checkov, the Kubernetes security scanner, on the chart's renders and on deploy/k8s.

Skipped checks are listed with their reasons in deploy/checkov.yaml; a check skipped for
one resource only is an annotation on that resource (checkov.io/skip...).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.helpers import CHECKOV, K8S_DIR, ROOT, SCENARIOS, render_text, require, run

CONFIG = ROOT / "deploy" / "checkov.yaml"


def checkov(directory: Path) -> None:
    tool = require(CHECKOV, "checkov")
    result = run(
        [
            tool,
            "--config-file",
            str(CONFIG),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_chart_passes_checkov(tmp_path: Path) -> None:
    """Every scenario in one run (checkov's start-up dominates its time)."""
    for name, args in SCENARIOS.items():
        (tmp_path / f"{name}.yaml").write_text(render_text(*args))
    checkov(tmp_path)


def test_plain_manifests_pass_checkov(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy, ignore=shutil.ignore_patterns("secrets.env*"))
    checkov(copy)


@pytest.mark.parametrize("check", ["CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"])
def test_every_skip_says_why(check: str) -> None:
    lines = CONFIG.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
    assert lines[index - 1].lstrip().startswith("#"), f"{check} is skipped without a reason"

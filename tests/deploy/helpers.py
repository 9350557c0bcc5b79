"""Runs the deployment tools (helm, kubectl, kubernetes-validate, checkov) for the tests.

The tools live in the git-ignored .tools/ (scripts/install-helm.sh,
scripts/install-checkov.sh) and the project's .venv; a missing one fails the test with a
pointer to `make install` instead of skipping it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "collab"
K8S_DIR = ROOT / "deploy" / "k8s"
MONITORING = ROOT / "deploy" / "monitoring"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECTL = TOOLS / "bin" / "kubectl"
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
KUBE_VERSIONS = ("1.29.0", "1.33.0")
NAMESPACE = "collab"
RELEASE = "collab"

# The chart needs PostgreSQL and Redis; everything else has a default.
REQUIRED_SETS = (
    "database.url=postgres://collab:secret@postgres:5432/collab",
    "redis.url=redis://redis:6379/0",
)
# name -> helm arguments of each scenario the chart is checked in.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "defaults": tuple(arg for value in REQUIRED_SETS for arg in ("--set", value)),
    **{
        path.name.removesuffix("-values.yaml"): ("--values", str(path))
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    },
}


def require(tool: Path, what: str) -> str:
    """The tool's path, or a failed test that says how to install it."""
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        pytest.fail(f"{what} is missing ({tool.relative_to(ROOT)}): run `make install`")
    return str(tool)


def helm_env() -> dict[str, str]:
    """helm's state stays under .tools/helm, out of $HOME."""
    helm_home = TOOLS / "helm"
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_DATA_HOME": str(helm_home / "data"),
    }


def run(command: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool and return what it did, whatever its exit code."""
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=helm_env(), timeout=120
    )


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm from .tools/bin."""
    return run([require(HELM, "helm"), *args])


@functools.cache
def render_text(*args: str, kube_version: str = KUBE_VERSIONS[-1], chart: Path = CHART) -> str:
    """`helm template` of the chart (hooks and the test pod included) as text."""
    result = helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
        *args,
    )
    if result.returncode != 0:
        pytest.fail(f"helm template {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def render(*args: str) -> list[dict[str, Any]]:
    """The rendered documents, parsed. Treat them as read-only: renders are cached."""
    return [doc for doc in yaml.safe_load_all(render_text(*args)) if doc]


def render_fails(*args: str) -> str:
    """Render expecting failure; return helm's error output."""
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every document of one kind."""
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one document of this kind and name."""
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod metadata, pod spec) of every Deployment, Job and Pod."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            yield name, template["metadata"], template["spec"]
        elif doc["kind"] == "Pod":
            yield name, doc["metadata"], doc["spec"]


def kubernetes_validate(path: Path, kube_version: str) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict against one Kubernetes version (CRDs are skipped)."""
    tool = require(KUBERNETES_VALIDATE, "kubernetes-validate")
    return run([tool, "--strict", "--quiet", "--no-warn", "-k", kube_version, str(path)])

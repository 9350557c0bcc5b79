"""deploy/k8s: the plain manifests rendered from the chart, applied with `kubectl apply -k`."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    K8S_DIR,
    KUBE_VERSIONS,
    KUBECTL,
    ROOT,
    helm_env,
    kubernetes_validate,
    pod_specs,
    require,
    run,
)

SECRET = "collab-secrets"
# Checked in but not rendered: the template of the env file the operator writes.
HAND_WRITTEN = {"secrets.env.example"}


@pytest.fixture(scope="module")
def fresh_render(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What scripts/render-k8s.sh writes today."""
    require(ROOT / ".tools" / "bin" / "helm", "helm")
    out = tmp_path_factory.mktemp("k8s")
    result = subprocess.run(
        [str(ROOT / "scripts" / "render-k8s.sh"), str(out)],
        capture_output=True,
        text=True,
        env=helm_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s` with the example secrets in place."""
    work = tmp_path_factory.mktemp("kustomize") / "k8s"
    shutil.copytree(K8S_DIR, work, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(work / "secrets.env.example", work / "secrets.env")
    result = run([require(KUBECTL, "kubectl"), "kustomize", str(work)])
    assert result.returncode == 0, result.stderr
    (work.parent / "built.yaml").write_text(result.stdout)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_committed_manifests_equal_a_fresh_render(fresh_render: Path) -> None:
    committed = {p.name for p in K8S_DIR.iterdir() if p.name not in HAND_WRITTEN}
    committed.discard("secrets.env")  # the operator's own, git-ignored
    rendered = {p.name for p in fresh_render.iterdir()}
    assert committed == rendered, "run scripts/render-k8s.sh"
    _, mismatch, errors = filecmp.cmpfiles(K8S_DIR, fresh_render, sorted(rendered), shallow=False)
    assert not mismatch and not errors, f"stale {mismatch + errors}: run scripts/render-k8s.sh"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


def test_manifests_match_the_chart_defaults_without_helm_only_parts() -> None:
    docs = [
        doc
        for path in sorted(K8S_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "Job", "NetworkPolicy"} <= kinds
    assert "Secret" not in kinds  # the kustomization generates it from secrets.env
    assert "Pod" not in kinds  # the helm test pod needs helm
    assert {"ServiceMonitor", "PrometheusRule"}.isdisjoint(kinds)  # off by default


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_kustomize_build_is_valid_for_kubernetes(
    built: list[dict[str, Any]], kube_version: str, tmp_path: Path
) -> None:
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(built))
    result = kubernetes_validate(path, kube_version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_secret_reference_reaches_the_generated_secret(
    built: list[dict[str, Any]],
) -> None:
    [secret] = [doc for doc in built if doc["kind"] == "Secret"]
    name = secret["metadata"]["name"]
    assert name.startswith(f"{SECRET}-"), "kustomize appends a content hash"
    keys = set(secret["data"])
    assert keys == {"DJANGO_SECRET_KEY", "COLLAB_TOKEN_SECRET", "DATABASE_URL", "REDIS_URL"}
    refs = set()
    for _, _, spec in pod_specs(built):
        for item in spec["containers"]:
            for env in item.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    assert refs and {ref_name for ref_name, _ in refs} == {name}
    assert {key for _, key in refs} <= keys


def test_everything_lands_in_one_namespace(built: list[dict[str, Any]]) -> None:
    assert {doc["metadata"]["namespace"] for doc in built} == {"collab"}

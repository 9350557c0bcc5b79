"""The `helm test` script (deploy/helm/collab/files/smoke_test.py) against a real gateway
and editor, started as the chart starts them: auth on, origins restricted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import CHART
from tests.support.processes import EDITOR_DIR, EditorInstance, GatewayInstance, run_manage

SECRET = "smoke-test-secret-" + "s" * 40
ORIGIN = "https://collab.example.com"
AUTH_ENV = {"COLLAB_AUTH_REQUIRED": "true", "COLLAB_TOKEN_SECRET": SECRET}


@pytest.fixture
def gateway(editors, gateways, tmp_path: Path) -> GatewayInstance:
    database_url = f"sqlite:///{tmp_path / 'smoke.sqlite3'}"
    run_manage(["migrate", "--no-input", "-v0"], {"DATABASE_URL": database_url})
    editor = EditorInstance(
        "editor-smoke", database_url=database_url, redis_url=None, workers=1, extra_env=AUTH_ENV
    ).start()
    editors.append(editor)
    instance = GatewayInstance(
        "gateway-smoke",
        upstreams=[editor.base_url],
        extra_env={**AUTH_ENV, "GATEWAY_ALLOWED_ORIGINS": ORIGIN},
    ).start()
    gateways.append(instance)
    return instance


def smoke_test(gateway: GatewayInstance, secret: str) -> subprocess.CompletedProcess[str]:
    """Run the script as the test pod does: in the editor's folder, settings from env."""
    return subprocess.run(
        [sys.executable, str(CHART / "files" / "smoke_test.py")],
        cwd=EDITOR_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "GATEWAY_URL": gateway.base_url,
            "GATEWAY_ORIGIN": ORIGIN,
            "COLLAB_AUTH_REQUIRED": "true",
            "COLLAB_TOKEN_SECRET": secret,
            "READY_TIMEOUT_SECONDS": "10",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_smoke_test_passes_through_a_working_gateway(gateway: GatewayInstance) -> None:
    result = smoke_test(gateway, SECRET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "101 Switching Protocols" in result.stdout
    assert "SyncStep1" in result.stdout


def test_smoke_test_fails_with_the_wrong_signing_key(gateway: GatewayInstance) -> None:
    result = smoke_test(gateway, "another-secret-" + "x" * 40)
    assert result.returncode != 0
    assert "closed the socket: 4401" in result.stderr

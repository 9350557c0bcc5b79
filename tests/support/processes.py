"""Real processes for tests: Redis servers, PostgreSQL databases, editor instances."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
EDITOR_DIR = ROOT / "services" / "editor"
ARTIFACTS = ROOT / "test-artifacts"
# The administrative connection used to create and drop per-test databases.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15) -> None:
    """Block until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class RedisServer:
    """A private redis-server on a free loopback port, restartable on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make install`")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PostgresDatabase:
    """A fresh PostgreSQL database, migrated, dropped when the test is done."""

    def __init__(self) -> None:
        self.name = f"collab_test_{uuid.uuid4().hex[:10]}"
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def create(self) -> PostgresDatabase:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        run_manage(["migrate", "--no-input", "-v0"], {"DATABASE_URL": self.url})
        return self

    def drop(self) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def editor_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of an editor process started by a test."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLLAB_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        {
            "DJANGO_SECRET_KEY": "test-secret-key-not-for-production",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_manage(args: list[str], env: dict[str, str]) -> str:
    """Run services/editor/manage.py with the project's interpreter; return stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EDITOR_DIR,
        env=editor_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


class ServiceProcess:
    """A service started as an operator would, in its own process group, logging to a file."""

    command: list[str]
    cwd: Path

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/docs"

    def _spawn(self, probe: str, timeout: float) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=editor_env(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill takes every worker
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + probe, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer {probe}; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once: nothing gets to flush."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def terminate(self) -> None:
        """Send SIGTERM to the process group; the caller waits as it needs."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.process = None
        return code

    def stop(self) -> None:
        """SIGTERM and wait for the graceful shutdown (SIGKILL after 30 s)."""
        if self.process is not None:
            self.terminate()
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int:
        """Resident memory of the main process."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/status").read_text().split("\n")
        line = next(line for line in fields if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class EditorInstance(ServiceProcess):
    """One editor instance (gunicorn + uvicorn workers)."""

    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "config.asgi:application",
    ]
    cwd = EDITOR_DIR

    def __init__(
        self,
        name: str,
        *,
        database_url: str,
        redis_url: str | None,
        workers: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        super().__init__(
            name,
            {
                "DATABASE_URL": database_url,
                "EDITOR_PORT": str(self.port),
                "EDITOR_WORKERS": str(workers),
                "COLLAB_HEAL_INTERVAL_SECONDS": "0.5",
                **({"REDIS_URL": redis_url} if redis_url else {}),
                **(extra_env or {}),
            },
        )

    def start(self, timeout: float = 30) -> EditorInstance:
        self._spawn("/healthz", timeout)
        return self

    def kill(self) -> None:
        """SIGKILL, then remove the metrics folder the dead master could not remove."""
        super().kill()
        shutil.rmtree(Path(tempfile.gettempdir()) / f"collab-editor-metrics-{self.port}", True)


GATEWAY_DIR = ROOT / "services" / "gateway"


class GatewayInstance(ServiceProcess):
    """The gateway (python -m gateway) in front of the given editor base URLs."""

    command = [sys.executable, "-m", "gateway"]
    cwd = GATEWAY_DIR

    def __init__(
        self, name: str, *, upstreams: list[str], extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        super().__init__(
            name,
            {
                "GATEWAY_PORT": str(self.port),
                "GATEWAY_UPSTREAMS": ",".join(upstreams),
                "GATEWAY_HEALTH_INTERVAL_SECONDS": "0.2",
                "GATEWAY_DRAIN_SECONDS": "1",
                **(extra_env or {}),
            },
        )

    def start(self, timeout: float = 20, *, wait_ready: bool = True) -> GatewayInstance:
        self._spawn("/readyz" if wait_ready else "/healthz", timeout)
        return self

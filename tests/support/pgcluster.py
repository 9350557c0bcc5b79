"""A private PostgreSQL server for one test: initdb + pg_ctl on a free port in a temp dir.

For tests that stop the database: the shared server on 5432 serves every other test and
must never be stopped. This one is the test's own, so it can really go away (`stop`)
and come back on the same port with the same data (`start`).

initdb and postgres refuse to run as root: as root, every command runs as the
`postgres` system user (`runuser -u postgres --`) on a directory that user owns;
as any other user they run directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.processes import free_port, run_manage


def postgres_bindir() -> Path:
    """The directory of initdb/pg_ctl (TEST_POSTGRES_BINDIR, else the newest packaged one)."""
    configured = os.environ.get("TEST_POSTGRES_BINDIR")
    candidates = [configured] if configured else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
    )[::-1]
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run `make install` "
        "or set TEST_POSTGRES_BINDIR"
    )


class PrivatePostgres:
    """A throw-away PostgreSQL cluster listening on 127.0.0.1:<free port> (trust auth)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="collab-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        if self.as_root:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.database = "collab_faults"
        self.running = False

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """DATABASE_URL of the test's database."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.server_log()}"
            )

    def create(self) -> PrivatePostgres:
        """initdb, start, create and migrate the database."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        run_manage(["migrate", "--no-input", "-v0"], {"DATABASE_URL": self.url})
        return self

    def start(self, timeout: float = 30) -> None:
        """Start the server on its port and wait until it accepts queries."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start"
        )
        self.running = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: backends are terminated, like a planned restart)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def destroy(self) -> None:
        """Stop the server at once if it runs, and remove its files."""
        if self.running or (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

"""Servers some tests start for themselves: PostgreSQL and an MLflow tracking server, on free ports.

PostgreSQL refuses to run as root, so it runs as the unprivileged user the local Elasticsearch uses;
the binaries come from Debian (``scripts/test_services.sh`` installs them when missing).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tauxcharge_assets.elastic.server import ES_SYSTEM_USER

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        subprocess.run(["bash", str(ROOT / "scripts" / "test_services.sh")], check=True)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str
    bin: Path

    def env(self) -> dict[str, str]:
        """The variables the shipped dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def dump(self) -> str:
        """Everything the database holds, as SQL (what a secret must never appear in)."""
        return subprocess.run(
            [str(self.bin / "pg_dump"), "-h", self.host, "-p", str(self.port), "-U", self.user, self.database],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server with password authentication (scram-sha-256) and one empty database.

    Its folder is a fresh one under the system's temporary directory: the unprivileged user must be
    able to reach it (pytest's own folders are private to root).
    """
    binaries = _postgres_bin()
    user = pwd.getpwnam(ES_SYSTEM_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    folder = Path(tempfile.mkdtemp(prefix="tauxcharge-postgres-"))
    password = secrets.token_urlsafe(18)
    (folder / "pw").write_text(password)
    os.chown(folder, user.pw_uid, user.pw_gid)
    os.chown(folder / "pw", user.pw_uid, user.pw_gid)
    port = free_port()
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "cwd": folder} if os.geteuid() == 0 else {"cwd": folder}

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, **as_user)  # type: ignore[call-overload]
        if done.returncode:
            raise RuntimeError(f"{Path(command[0]).name} failed: {done.stderr.strip()[-2000:]}")

    run(str(binaries / "initdb"), "-D", str(folder / "data"), "-U", "tauxcharge", f"--pwfile={folder / 'pw'}",
        "--auth=scram-sha-256", "-E", "UTF8")  # fmt: skip
    run(str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    server = Postgres("127.0.0.1", port, "tauxcharge", password, "dagster", binaries)
    try:
        subprocess.run(
            [str(binaries / "createdb"), "-h", server.host, "-p", str(port), "-U", server.user, server.database],
            env={**os.environ, "PGPASSWORD": password},
            check=True,
            capture_output=True,
        )
        yield server
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def server_process(
    command: list[str],
    health_url: str,
    log_path: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[None]:
    """``command`` in its own process group until the block ends, once ``health_url`` answers 200.

    Fails with the end of its log when it exits or does not answer within ``timeout_s``; stopped with
    SIGTERM, then SIGKILL after 30 s.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(health_url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{Path(command[0]).name} did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


@contextmanager
def mlflow_server(folder: Path, timeout_s: float = 300.0) -> Iterator[str]:
    """``mlflow server`` (sqlite backend, artifacts served by the server itself) on 127.0.0.1; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts")]  # fmt: skip
    try:
        with server_process(command, f"{url}/health", folder / "server.log", timeout_s):
            yield url
    finally:
        shutil.rmtree(folder / "artifacts", ignore_errors=True)

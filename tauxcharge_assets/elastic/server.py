"""A real single-node Elasticsearch for development, tests and CI, managed by the project.

The server is the ``integ-test-zip`` distribution fetched from Maven Central with
``mvn dependency:copy``, started on 127.0.0.1 with the system JDK 17. Elasticsearch refuses to run
as root, so when we are root it runs as an unprivileged system user that we create.

This build has no ingest pipelines, ES|QL, painless, update/delete-by-query or ILM: nothing in the
product depends on them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ES_VERSION = "8.19.21"
ES_ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
ES_SYSTEM_USER = "tauxcharge-es"
DEFAULT_PORT = 9200


class LocalElasticsearchError(RuntimeError):
    """The local server could not be fetched, started or reached; the message says what to do."""


def es_root() -> Path:
    """Where the distribution, data and logs live.

    Root's home is not readable by the unprivileged server user, so root uses /var/tmp.
    """
    if os.environ.get("TAUXCHARGE_ES_HOME"):
        return Path(os.environ["TAUXCHARGE_ES_HOME"]).resolve()
    if os.geteuid() == 0:
        return Path("/var/tmp/tauxcharge_assets/elasticsearch")
    return Path.home() / ".cache" / "tauxcharge_assets" / "elasticsearch"


@dataclass(frozen=True)
class LocalServer:
    port: int = DEFAULT_PORT
    heap_mb: int = 512

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return es_root() / f"elasticsearch-{ES_VERSION}"

    @property
    def instance_dir(self) -> Path:
        return es_root() / "instances" / str(self.port)

    @property
    def pid_file(self) -> Path:
        return self.instance_dir / "elasticsearch.pid"

    @property
    def console_log(self) -> Path:
        return self.instance_dir / "console.log"


def _java_home() -> str:
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            return os.environ[var]
    java = shutil.which("java")
    if not java:
        raise LocalElasticsearchError(
            "No JDK found: install OpenJDK 17 (apt-get install openjdk-17-jdk-headless) or set ES_JAVA_HOME."
        )
    return str(Path(java).resolve().parents[1])


def fetch_distribution() -> Path:
    """Fetch the zip with Maven once and unpack it; returns the Elasticsearch home."""
    server = LocalServer()
    if (server.home / "bin" / "elasticsearch").exists():
        return server.home
    root = es_root()
    root.mkdir(parents=True, exist_ok=True)
    zip_path = root / f"elasticsearch-{ES_VERSION}.zip"
    if not zip_path.exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise LocalElasticsearchError(
                "Maven (mvn) is needed to fetch Elasticsearch: apt-get install maven, "
                "or point TAUXCHARGE_ES_URL at an existing server."
            )
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ES_ARTIFACT}", f"-DoutputDirectory={root}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not zip_path.exists():
            raise LocalElasticsearchError(
                f"mvn dependency:copy of {ES_ARTIFACT} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    staging = root / f".unpack-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(staging)
    for path in staging.rglob("*"):
        # zipfile drops the executable bits that bin/ and the JDK launcher scripts need
        if path.is_file() and ("bin" in path.parts or path.suffix == ".sh"):
            path.chmod(0o755)
    (staging / f"elasticsearch-{ES_VERSION}").rename(server.home)
    shutil.rmtree(staging, ignore_errors=True)
    return server.home


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_SYSTEM_USER],
            check=True,
        )
        return pwd.getpwnam(ES_SYSTEM_USER)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for child in path.rglob("*"):
        os.chown(child, uid, gid, follow_symlinks=False)


def cluster_health(url: str, timeout: float = 2.0) -> dict | None:
    """``GET _cluster/health``; ``None`` when nothing answers (``GET /`` answers 405 on this build)."""
    try:
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_pid(server: LocalServer) -> int | None:
    try:
        pid = int(server.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def status(server: LocalServer | None = None) -> dict:
    server = server or LocalServer()
    health = cluster_health(server.url)
    return {
        "url": server.url,
        "pid": recorded_pid(server),
        "status": health["status"] if health else "down",
        "home": str(server.home),
    }


def start(server: LocalServer | None = None, timeout_s: float = 180.0) -> str:
    """Start the local server (or reuse the one already answering) and wait until it is usable."""
    server = server or LocalServer()
    health = cluster_health(server.url)
    if health and health.get("status") in ("green", "yellow"):
        return server.url
    home = fetch_distribution()
    server.instance_dir.mkdir(parents=True, exist_ok=True)
    (server.instance_dir / "data").mkdir(exist_ok=True)
    (server.instance_dir / "logs").mkdir(exist_ok=True)
    popen_kwargs: dict = {}
    if os.geteuid() == 0:
        user = _ensure_system_user()
        es_root().chmod(0o755)
        for parent in es_root().parents:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o005)  # the server user must traverse into es_root
        _chown_tree(home, user.pw_uid, user.pw_gid)
        _chown_tree(server.instance_dir, user.pw_uid, user.pw_gid)
        popen_kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    settings = {
        "discovery.type": "single-node",
        "xpack.security.enabled": "false",
        "network.host": "127.0.0.1",
        "http.port": str(server.port),
        "transport.port": str(server.port + 100),
        "path.data": str(server.instance_dir / "data"),
        "path.logs": str(server.instance_dir / "logs"),
        "cluster.name": f"tauxcharge-{server.port}",
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ES_JAVA_HOME": _java_home(),
        "ES_JAVA_OPTS": f"-Xms{server.heap_mb}m -Xmx{server.heap_mb}m",
        "ES_PATH_CONF": str(home / "config"),
        "HOME": str(server.instance_dir),
    }
    command = [str(home / "bin" / "elasticsearch"), *[f"-E{key}={value}" for key, value in settings.items()]]
    log = server.console_log.open("ab")
    process = subprocess.Popen(
        command,
        cwd=server.instance_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **popen_kwargs,
    )
    server.pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = cluster_health(server.url)
        if health and health.get("status") in ("green", "yellow"):
            return server.url
        if process.poll() is not None:
            tail = server.console_log.read_text(errors="replace")[-3000:]
            raise LocalElasticsearchError(
                f"Elasticsearch exited with code {process.returncode} while starting on {server.url}.\n{tail}"
            )
        time.sleep(1.0)
    raise LocalElasticsearchError(
        f"Elasticsearch did not become healthy on {server.url} within {timeout_s:.0f} s; see {server.console_log}."
    )


def stop(server: LocalServer | None = None, timeout_s: float = 60.0) -> bool:
    """Stop the server by the PID we recorded; returns whether one was running."""
    server = server or LocalServer()
    pid = recorded_pid(server)
    if pid is None:
        return False
    if _is_group_leader(pid):
        os.killpg(pid, signal.SIGTERM)  # the JVM and its launcher script alike
    else:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.5)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    server.pid_file.unlink(missing_ok=True)
    return True


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False

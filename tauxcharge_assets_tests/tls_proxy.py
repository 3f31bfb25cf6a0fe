"""A TLS front that demands credentials, before the real local Elasticsearch, for the secured-cluster tests.

The integ-test build the project runs has no security module, so it cannot check a password or serve
https. This proxy does what a secured cluster's HTTP layer does to a client: TLS with a certificate
from a throwaway CA (made with the ``openssl`` command line), ``401`` without a known user/password
(``Authorization: Basic``) or API key (``Authorization: ApiKey``), optionally ``403`` for a request a
role does not allow; everything else is forwarded to the real server and its answer returned as is.
Standard library only; the package never needs it.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Not forwarded: hop-by-hop headers, and the credentials (the real server has no security to check them).
_DROPPED = {"host", "authorization", "connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA bundle a client must be given (TAUXCHARGE_ES_CA_CERTS)
    cert: Path
    key: Path
    sha256_fingerprint: str  # "AB:CD:..." of the server certificate (TAUXCHARGE_ES_SSL_ASSERT_FINGERPRINT)


def make_certificates(folder: Path) -> Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (P-256 keys: made in milliseconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, request, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=tauxcharge test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    shown = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Certificates(ca, cert, key, shown.strip().split("=", 1)[1])


@dataclass
class Gate:
    """Who may pass: one user/password and one API key; ``authorize(method, path, body)`` may refuse the rest."""

    username: str
    password: str
    api_key: str
    authorize: Callable[[str, str, bytes | None], bool] | None = None
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status) of each
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepts(self, header: str | None) -> bool:
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header in (f"Basic {basic}", f"ApiKey {self.api_key}")

    def record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, path, status))

    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, _, status in self.requests]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int], gate: Gate) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context, self.upstream, self.gate = context, upstream, gate

    def get_request(self) -> tuple[Any, Any]:
        connection, address = self.socket.accept()
        return self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The handshake in the request's own thread: a client that distrusts us fails alone."""
        try:
            request.settimeout(30)
            request.do_handshake()
            request.settimeout(None)  # then idle keep-alive connections wait, as a server's do
        except (ssl.SSLError, OSError):
            request.close()
            return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as elasticsearch-py expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _refuse(self, status: int, kind: str, reason: str) -> None:
        body = json.dumps({"error": {"type": kind, "reason": reason}, "status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-elastic-product", "Elasticsearch")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="security", ApiKey')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        gate, path = self.server.gate, urllib.parse.urlsplit(self.path).path
        if not gate.accepts(self.headers.get("Authorization")):
            gate.record(self.command, path, 401)
            self._refuse(401, "security_exception", f"unable to authenticate user for REST request [{path}]")
            return
        try:
            allowed = gate.authorize is None or gate.authorize(self.command, path, body)
        except Exception as error:  # a bug in a test's rule: answered, so the test sees it
            gate.record(self.command, path, 500)
            self._refuse(500, "proxy_exception", f"authorize failed: {error!r}")
            return
        if not allowed:
            gate.record(self.command, path, 403)
            self._refuse(403, "security_exception", f"action [{self.command} {path}] is unauthorized for this user")
            return
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _DROPPED}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            gate.record(self.command, path, 502)
            self._refuse(502, "proxy_exception", "the server behind the proxy did not answer")
            return
        finally:
            upstream.close()
        gate.record(self.command, path, response.status)
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _DROPPED:
                self.send_header(name, value)
        self.send_header(
            "Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815 - the names http.server calls


class SecuredProxy:
    """``with SecuredProxy(upstream_url, certificates, gate) as proxy:`` serves ``proxy.url`` (https, 127.0.0.1)."""

    def __init__(self, upstream_url: str, certificates: Certificates, gate: Gate) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert, certificates.key)
        self.gate = gate
        self._server = _Server(context, (parsed.hostname or "127.0.0.1", parsed.port or 9200), gate)
        self._thread = threading.Thread(target=self._server.serve_forever, name="tls-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SecuredProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

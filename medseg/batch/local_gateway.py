"""A hospital-style API gateway in front of a :class:`~medseg.batch.local_orthanc.LocalOrthanc`,
on loopback, for tests: HTTPS with a given certificate, a bearer token checked, requests forwarded
to Orthanc with its basic credentials. Debian's Orthanc 1.10.1 cannot serve HTTPS itself (it
crashes at the TLS handshake, exit -11), and hospitals put DICOMweb behind such a gateway anyway.

    with LocalOrthanc() as pacs, LocalGateway(pacs, tls=make_test_ca(tmp)[0], token="t") as gw:
        gw.dicomweb_url        # https://127.0.0.1:PORT/dicom-web
        gw.requests            # [(method, path), ...] as received (to count QIDO-RS pages)
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from medseg.batch.local_orthanc import LocalOrthanc, free_port

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization", "content-length"}


class LocalGateway:
    def __init__(self, pacs: LocalOrthanc, *, tls: Path | None = None, token: str | None = None):
        self.pacs, self.tls, self.token = pacs, tls, token
        self.port = free_port()
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> LocalGateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                gateway.requests.append((self.command, self.path))
                if gateway.token is not None and self.headers.get("Authorization") != f"Bearer {gateway.token}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", "Bearer")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                user, password = gateway.pacs.auth
                headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                conn = http.client.HTTPConnection("127.0.0.1", gateway.pacs.http_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

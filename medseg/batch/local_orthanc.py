"""Start a real, private Orthanc PACS on loopback (Debian's ``orthanc`` + ``orthanc-dicomweb``).

Used by the tests and the PACS tutorial: a fresh storage folder, free ports on 127.0.0.1,
HTTP basic authentication on, DICOMweb enabled, and a DIMSE listener. Nothing is exposed beyond
the loopback interface (``RemoteAccessAllowed`` is off).

    with LocalOrthanc() as pacs:
        pacs.dicomweb_url   # http://127.0.0.1:PORT/dicom-web
        pacs.auth           # ("medseg", "<random password>")
        pacs.dimse          # ("127.0.0.1", PORT, "ORTHANC")
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import PACSError

ORTHANC_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so",
)


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ORTHANC_BINARY_CANDIDATES if Path(p).exists()), None)


def _dicomweb_plugin() -> str | None:
    return next((p for p in DICOMWEB_PLUGIN_CANDIDATES if Path(p).exists()), None)


def orthanc_available() -> bool:
    """True when Debian's Orthanc and its DICOMweb plugin are installed."""
    return bool(_orthanc_binary() and _dicomweb_plugin())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalOrthanc:
    """A throw-away Orthanc on 127.0.0.1. Use as a context manager (or call start/stop)."""

    user: str = "medseg"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    aet: str = "ORTHANC"
    # AE titles Orthanc accepts as peers (only these may C-FIND / C-GET / C-STORE, like a hospital
    # PACS): name -> (aet, host, port); the port is where C-MOVE would send to.
    modalities: dict[str, tuple[str, str, int]] = field(
        default_factory=lambda: {"medseg": ("MEDSEG", "127.0.0.1", 11112)})
    workdir: Path | None = None
    startup_timeout_s: float = 30.0
    #: refuse associations that call another AE title than ``aet`` (as most hospital PACS do)
    check_called_aet: bool = False

    def __post_init__(self) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_workdir = self.workdir is None

    # -- endpoints ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    @property
    def dimse(self) -> tuple[str, int, str]:
        return ("127.0.0.1", self.dicom_port, self.aet)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> LocalOrthanc:
        binary = _orthanc_binary()
        plugin = _dicomweb_plugin()
        if not binary or not plugin:
            raise PACSError("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="medseg-orthanc-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medseg-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": True,
            "StorageCompression": False,
            "HttpTimeout": 60,
            "StableAge": 1,
        }
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(config, indent=2))
        log_path = self.workdir / "orthanc.log"
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [binary, "--no-jobs", str(cfg_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise PACSError(f"Orthanc exited at start-up (code {self._proc.returncode}): {tail}")
            try:
                self.rest("GET", "/system")
                return self
            except (OSError, PACSError):
                time.sleep(0.2)
        self.stop()
        raise PACSError(f"Orthanc did not answer on {self.url} within {self.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        if self._own_workdir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- small REST helpers (tests and tutorials inspect the PACS through these) -------------------
    def rest(self, method: str, path: str, body: bytes | None = None, *, auth: bool = True,
             content_type: str = "application/json") -> object:
        """Call Orthanc's REST API; returns decoded JSON (or bytes). Raises PACSError on HTTP errors."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                data = resp.read()
                if resp.headers.get_content_type() == "application/json":
                    return json.loads(data or b"null")
                return data
        except urllib.error.HTTPError as exc:
            raise PACSError(f"Orthanc {method} {path} answered HTTP {exc.code}") from None

    def upload(self, files: list[os.PathLike[str]] | list[Path]) -> list[str]:
        """Store DICOM files through the REST API; returns Orthanc instance ids."""
        ids = []
        for f in files:
            answer = self.rest("POST", "/instances", Path(f).read_bytes(), content_type="application/dicom")
            ids.append(answer["ID"])  # type: ignore[index]
        return ids

    def instances_of_modality(self, modality: str) -> list[dict]:
        """Series-level records whose Modality matches (used to count stored SEGs)."""
        found = self.rest("POST", "/tools/find", json.dumps(
            {"Level": "Series", "Query": {"Modality": modality}, "Expand": True}).encode())
        return list(found)  # type: ignore[arg-type]


def make_test_ca(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away CA and a server certificate for ``host`` signed by it, with OpenSSL's command
    line (tests: HTTPS on loopback). Returns (PEM with the server certificate and key, CA PEM)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise PACSError("the openssl command is not installed")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=medseg test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}")
    (folder / "ext.cnf").write_text(
        f"subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    pem = folder / "server.pem"
    pem.write_bytes((folder / "server.crt").read_bytes() + (folder / "server.key").read_bytes())
    return pem, folder / "ca.pem"

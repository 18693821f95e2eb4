"""A real Orthanc PACS (Debian's `orthanc` + `orthanc-dicomweb`) on loopback ports, for the PACS tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ORTHANC_BIN = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_orthanc() -> None:
    """Skip without Orthanc, except under CI=true where .ci/run installs it (then fail)."""
    if Path(ORTHANC_BIN).exists() and DICOMWEB_PLUGIN.exists():
        return
    msg = "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


class Orthanc:
    """One Orthanc process with its own storage folder, HTTP (REST + DICOMweb) and DICOM ports."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.http_port, self.dicom_port = _free_port(), _free_port()
        self.users = users or {}
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = {"Name": "FusionRxTestPACS", "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
               "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
               "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users,
               "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
               "DicomModalities": {"fusionrx": ["FUSIONRX", "127.0.0.1", _free_port()]},
               "DicomCheckCalledAet": False, "StableAge": 1, "HttpTimeout": 30}
        (self.root / "orthanc.json").write_text(json.dumps(cfg))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def _auth(self):
        return next(iter(self.users.items())) if self.users else None

    def start(self, timeout_s: float = 30.0) -> "Orthanc":
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC_BIN, str(self.root / "orthanc.json")], stdout=log, stderr=log)
        t_end = time.time() + timeout_s
        while time.time() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.root / 'orthanc.log'}")
            try:
                if requests.get(f"{self.url}/system", auth=self._auth(), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def upload(self, files: list[Path]) -> int:
        """POST each DICOM file to /instances; returns how many were stored."""
        n = 0
        with requests.Session() as s:
            s.auth = self._auth()
            for f in files:
                r = s.post(f"{self.url}/instances", data=Path(f).read_bytes(), timeout=30)
                r.raise_for_status()
                n += 1
        return n

"""Start, health-check and stop the two servers under test (dicomhub and Orthanc).

Each server gets a fresh data folder under bench/work/, its own log file there, and
TCP_NODELAY=1 in its environment. Processes are started in their own process group and
stopped by that id only (never by name), including on errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ORTHANC_BIN", "ORTHANC_DICOMWEB_PLUGIN", "Server", "dicomhub_server", "orthanc_server"]

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass
class Server:
    """One server process: how to start it, where it answers, how to tell it is up."""

    name: str
    command: list[str]
    base_url: str  # DICOMweb root, without a trailing slash
    health_url: str
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, **self.env, "TCP_NODELAY": "1"}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: stop() reaches uvicorn's workers too
            # Servers start before any client thread exists, so preexec_fn is safe here.
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - should the driver die uncleanly
        )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode} while starting; "
                    f"see {self.log_path}"
                )
            try:
                response = httpx.get(self.health_url, timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} not healthy after {timeout:.0f} s ({last}); see {self.log_path}"
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the processes of this server's process group (uvicorn's
        supervisor and workers; Orthanc's one process), from /proc; 0 when not running."""
        if self.process is None:
            return 0.0
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # a process that ended meanwhile
            # after the command: state, ppid, pgrp, ...; utime and stime are fields 14 and 15
            if int(fields[2]) == self.process.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def settle(
        self, *, window: float = 2.0, busy: float = 0.03, limit: float = 120.0
    ) -> tuple[float, float]:
        """Wait until the server is idle (under `busy` of a core over `window` seconds), so
        that work it put off (dicomhub's FHIR sync) is not done while the next figure runs.
        Returns (seconds waited, CPU seconds it used meanwhile). The window outlasts the
        sync's longest pause between passes over a study still being stored (1 s)."""
        started = time.monotonic()
        first = last = self.cpu_seconds()
        while self.exit_status() is None and time.monotonic() - started < limit:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - last < busy * window:
                break
            last = now
        return time.monotonic() - started, self.cpu_seconds() - first

    def exit_status(self) -> int | None:
        """None while running (or never started), else the exit status."""
        return self.process.poll() if self.process else None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group we created, then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is not None:
            pgid = process.pid  # start_new_session: the group id is the child's pid
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pgid, signal.SIGKILL)
                    process.wait(5)
            # Members of our group that outlive the leader (uvicorn workers; should not happen).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the driver dies (Linux PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def dicomhub_server(repo: Path, work: Path, *, workers: int, port: int = 8080) -> Server:
    data = _fresh(work / "dicomhub")
    command = [
        str(repo / ".venv" / "bin" / "dicomhub"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--workers",
        str(workers),
        "--log-level",
        "warning",  # one access-log line per request would cost the client side CPU too
    ]
    return Server(
        name="dicomhub",
        command=command,
        base_url=f"http://127.0.0.1:{port}/dicom-web",
        health_url=f"http://127.0.0.1:{port}/health",
        data_dir=data,
        log_path=work / "dicomhub.log",
    )


def orthanc_config(data: Path, port: int) -> dict[str, object]:
    return {
        "Name": "OrthancBench",
        "StorageDirectory": str(data / "storage"),
        "IndexDirectory": str(data / "index"),
        "TemporaryDirectory": str(data / "tmp"),
        "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "StorageCompression": False,
        "OverwriteInstances": False,
        "SaveJobs": False,
        "SyncStorageArea": True,
        "StoreMD5ForAttachments": True,
        "StorageAccessOnFind": "Always",
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }


def orthanc_server(work: Path, *, port: int = 8042) -> Server:
    data = _fresh(work / "orthanc")
    for sub in ("storage", "index", "tmp"):
        (data / sub).mkdir()
    config_path = data / "orthanc.json"
    config_path.write_text(json.dumps(orthanc_config(data, port), indent=2))
    return Server(
        name="Orthanc",
        command=[str(ORTHANC_BIN), str(config_path)],
        base_url=f"http://127.0.0.1:{port}/dicom-web",
        health_url=f"http://127.0.0.1:{port}/system",
        data_dir=data,
        log_path=work / "orthanc.log",
    )

"""The `dicomhub` console script, run for real: import, serve, configuration and refusals."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from pydicom import dcmread

from tests.conftest import PG_ADMIN, require_postgres
from tests.dicomfiles import sample_files

DICOMHUB = Path(sys.executable).parent / "dicomhub"
SAMPLES = {p.name: p for p in sample_files()}
GOOD = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    env["COLUMNS"] = "400"  # rich folds long paths at the terminal width (80 without a terminal)
    env.update(variables)
    return env


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMHUB), *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _flat(text: str) -> str:
    """Rich wraps at the terminal width (80 without one): compare with whitespace collapsed."""
    return " ".join(text.split())


def _counts(summary: str) -> dict[str, int]:
    found = {}
    for label in ("stored", "already present", "failed"):
        match = re.search(rf"{label}\W+(\d+)", summary)
        assert match, summary
        found[label] = int(match.group(1))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(root: Path, names: list[str]) -> Path:
    """Sample files spread over nested folders, as an archive export would have them."""
    for i, name in enumerate(names):
        folder = root / ("" if i % 3 == 0 else "series" if i % 3 == 1 else "series/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES[name], folder / name)
    return root


def _study_uids(names: list[str]) -> set[str]:
    return {str(dcmread(SAMPLES[n], stop_before_pixels=True).StudyInstanceUID) for n in names}


@dataclass
class Server:
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


@contextmanager
def serving(
    *args: str, cwd: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[Server]:
    log = cwd / f"serve-{port}.log"
    with log.open("w") as log_fh:
        proc = subprocess.Popen(
            [str(DICOMHUB), "serve", *args],
            cwd=cwd,
            env=env or _env(),
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()}"
                assert time.monotonic() < deadline, f"serve did not answer: {log.read_text()}"
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            yield Server(url, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


def _check_server(server: Server, studies: set[str], storage: str) -> None:
    health = httpx.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    r = httpx.get(f"{server.url}/dicom-web/studies", timeout=30)
    assert r.status_code == 200, r.text
    assert {s["0020000D"]["Value"][0] for s in r.json()} == studies
    port = server.url.rsplit(":", 1)[1]
    lines = [
        line
        for line in server.log_text().splitlines()
        if f"http://127.0.0.1:{port}" in line and "dicomhub" in line
    ]
    assert len(lines) == 1, server.log_text()
    assert storage in lines[0], lines[0]


def test_import_then_serve(tmp_path: Path) -> None:
    source = _tree(tmp_path / "export", [*GOOD, "MR_truncated.dcm"])
    (source / "series" / "notes.txt").write_text("not DICOM\n")
    data = tmp_path / "data"

    first = _run("import", str(source), "--data-dir", str(data), cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # something failed
    assert _counts(first.stdout) == {"stored": 4, "already present": 0, "failed": 2}
    err = _flat(first.stderr)
    assert "importing" in err and "6/6" in err  # the progress bar, at its end
    assert f"failed {source / 'series' / 'notes.txt'}: not a readable DICOM" in err
    truncated = next(source.rglob("MR_truncated.dcm"))
    assert f"failed {truncated}: pixel data is truncated" in err
    assert "Traceback" not in first.stderr

    again = _run("import", str(source), "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 1
    assert _counts(again.stdout) == {"stored": 0, "already present": 4, "failed": 2}

    port = _free_port()
    with serving("--port", str(port), "--data-dir", str(data), cwd=tmp_path, port=port) as server:
        _check_server(server, _study_uids(GOOD), f"index sqlite:///{data.resolve()}/index.sqlite")
        assert f"blobs in {data.resolve() / 'blobs'}" in server.log_text()
        # No --workers: one process per CPU (at most 8), each answering on the one port.
        workers = min(len(os.sched_getaffinity(0)), 8)
        assert f"; {workers} worker(s)" in server.log_text()
        # The first worker may answer while the others are still starting.
        deadline = time.monotonic() + 30
        while server.log_text().count("Started server process") < workers:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        time.sleep(0.5)  # and no more than that many come
        assert server.log_text().count("Started server process") == workers


def test_workers_slow_to_start_are_waited_for(tmp_path: Path) -> None:
    # As on a loaded machine: each worker process needs 8 s before it can answer uvicorn's
    # health check (5 s by default, after which it was killed and started again, for ever).
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import sys, time\nif '--multiprocessing-fork' in sys.argv:\n    time.sleep(8)\n"
    )
    path = os.pathsep.join(p for p in (str(slow), os.environ.get("PYTHONPATH")) if p)
    port = _free_port()
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--workers", "2"]
    with serving(*args, cwd=tmp_path, port=port, env=_env(PYTHONPATH=path)) as server:
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert "died" not in server.log_text(), server.log_text()


def _default_workers(cpus: set[int], env: dict[str, str] | None = None) -> int:
    """Settings().workers in a fresh process limited to `cpus` (as taskset or a container would)."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1:]}); "
        "from dicomhub.config import Settings; print(Settings().workers)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, cpus)],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout)


def test_default_workers_follow_the_cpus_the_process_may_use() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert _default_workers({allowed[0]}) == 1
    assert _default_workers(set(allowed)) == min(len(allowed), 8)
    assert _default_workers(set(allowed), _env(DICOMHUB_WORKERS="3")) == 3


def test_import_of_good_files_only_succeeds(tmp_path: Path) -> None:
    source = _tree(tmp_path / "good", GOOD[:2])
    result = _run("import", str(source), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _counts(result.stdout) == {"stored": 2, "already present": 0, "failed": 0}
    assert "failed " not in result.stderr
    # A single file (not a folder) is fine too, and already present is not a failure.
    single = _run(
        "import", str(source / GOOD[0]), "--data-dir", str(tmp_path / "data"), cwd=tmp_path
    )
    assert single.returncode == 0
    assert _counts(single.stdout) == {"stored": 0, "already present": 1, "failed": 0}


def test_options_from_environment_and_toml(tmp_path: Path) -> None:
    data = tmp_path / "data"
    imported = _run(
        "import",
        str(_tree(tmp_path / "in", GOOD[:1])),
        cwd=tmp_path,
        env=_env(DICOMHUB_DATA_DIR=str(data)),
    )
    assert imported.returncode == 0, imported.stderr
    assert (data / "index.sqlite").is_file()  # the variable chose the folder
    studies = _study_uids(GOOD[:1])

    port = _free_port()
    env = _env(DICOMHUB_PORT=str(port), DICOMHUB_DATA_DIR=str(data))
    with serving(cwd=tmp_path, port=port, env=env) as server:
        _check_server(server, studies, "index sqlite:///")

    port = _free_port()
    config = tmp_path / "dicomhub.toml"
    config.write_text(f'port = {port}\ndata_dir = "{data}"\nlog_level = "info"\n')
    with serving("--config", str(config), cwd=tmp_path, port=port) as server:
        _check_server(server, studies, f"sqlite:///{data.resolve()}")

    # Command-line options win over the file.
    port = _free_port()
    with serving("--config", str(config), "--port", str(port), cwd=tmp_path, port=port) as server:
        _check_server(server, studies, "sqlite")


def test_an_unknown_key_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('prot = 8080\ndata_dir = "x"\n')
    result = _run("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key(s)" in _flat(result.stderr) and "prot" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["option", "environment"], ids=["--host", "DICOMHUB_HOST"])
def test_a_public_address_needs_insecure(tmp_path: Path, how: str) -> None:
    if how == "option":
        result = _run("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    else:
        env = _env(DICOMHUB_HOST="0.0.0.0", DICOMHUB_DATA_DIR=str(tmp_path / "d"))
        result = _run("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    message = _flat(result.stderr)
    assert "refusing to listen on 0.0.0.0" in message
    assert "--insecure" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching any storage


@pytest.fixture
def pg_database() -> Iterator[str]:
    require_postgres()
    name = f"dicomhub_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgresql_database_url(tmp_path: Path, pg_database: str) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    data = tmp_path / "data"
    source = _tree(tmp_path / "in", GOOD)
    result = _run(
        "import", str(source), "--data-dir", str(data), "--database-url", url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert _counts(result.stdout) == {"stored": 4, "already present": 0, "failed": 0}
    assert not (data / "index.sqlite").exists()  # the index went to PostgreSQL

    # The server names the backend in its start-up line, never the password (trust auth
    # ignores it here; a real deployment would need it).
    with_password = url.replace("postgres@", "postgres:s3cret-pw@")
    port = _free_port()
    args = ("--port", str(port), "--data-dir", str(data), "--database-url", with_password)
    with serving(*args, cwd=tmp_path, port=port) as server:
        shown = f"index postgresql+psycopg://postgres:***@127.0.0.1:5432/{pg_database};"
        _check_server(server, _study_uids(GOOD), shown)
        assert httpx.get(f"{server.url}/health").json()["database"] == "postgresql"
        assert "s3cret-pw" not in server.log_text()

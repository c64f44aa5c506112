"""Shared fixtures: a fresh archive per test on SQLite and on a real PostgreSQL, served for real."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn

from dicomhub.app import create_app
from dicomhub.bootstrap import Services, build_services, prepare_storage
from dicomhub.config import Settings

PG_ADMIN = os.environ.get("DICOMHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it cannot be used."""
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN} is not reachable ({str(exc).strip().splitlines()[0]})"
    return None


_PG_PROBLEM: str | bool | None = False  # False = not probed yet


def pg_problem() -> str | None:
    global _PG_PROBLEM  # noqa: PLW0603 - probed once per session
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _pg_available()
    assert _PG_PROBLEM is not True
    return _PG_PROBLEM or None


def require_postgres() -> None:
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run every test")
        pytest.skip(f"skipped: {problem}")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        require_postgres()
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    name = f"dicomhub_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        sqlite_synchronous="NORMAL",
        qido_max_limit=500,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    prepare_storage(settings)
    built = build_services(settings)
    try:
        yield built
    finally:
        built.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn on a loopback port in a background thread."""

    def __init__(self, settings: Settings, services: Services, *, root_path: str = "") -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            create_app(settings, services),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            root_path=root_path,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings, services: Services) -> Iterator[LiveServer]:
    with LiveServer(settings, services) as server:
        yield server


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client on the live server's /dicom-web root."""
    with httpx.Client(base_url=live_server.url + "/dicom-web", timeout=60) as client:
        yield client

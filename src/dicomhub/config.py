"""Settings: defaults < TOML config file < DICOMHUB_* environment < command-line options."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["CONFIG_ENV", "Settings", "is_loopback"]

CONFIG_ENV = "DICOMHUB_CONFIG"
_ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#@]+")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by DICOMHUB_CONFIG; keys are the setting names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(CONFIG_ENV)
        self._values: dict[str, Any] = {}
        if path:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            # Accept both a flat file and one with a [dicomhub] table.
            self._values = dict(data.get("dicomhub", data))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(self._values) - known)
        if unknown:
            raise ValueError(
                f"unknown key(s) in {os.environ.get(CONFIG_ENV)}: {', '.join(unknown)}"
            )
        return dict(self._values)


_MOST_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """One worker process per CPU this process may run on, at most 8.

    Python runs one thread of work at a time per process, so a single process leaves every
    core but one idle under concurrent load. Past eight, the single SQLite writer and memory
    (each worker holds its own caches) gain little; set --workers to go further.
    """
    # Linux counts the CPUs a container's CPU set or taskset allows; elsewhere, all of them.
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, min(cpus, _MOST_DEFAULT_WORKERS))


class Settings(BaseSettings):
    """Every knob of the server; each one is also DICOMHUB_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="DICOMHUB_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = None
    workers: int = Field(default_factory=default_workers, ge=1, le=64)
    insecure: bool = False
    public_url: str | None = None
    log_level: str = "info"
    qido_default_limit: int = Field(default=100, ge=1)
    qido_max_limit: int = Field(default=1000, ge=1)
    max_request_bytes: int = Field(default=4 * 1024**3, ge=1024)
    # NORMAL (as Orthanc): commits survive a crash of the process, not necessarily a power
    # loss; FULL also survives power loss, at one more fsync per write transaction.
    sqlite_synchronous: str = "NORMAL"
    # DICOM -> FHIR sync: on by default, into the embedded store unless fhir_url names one.
    fhir_sync: bool = True
    fhir_url: str | None = None
    fhir_token: str | None = None
    fhir_token_url: str | None = None
    fhir_client_id: str | None = None
    fhir_client_secret: str | None = None
    fhir_scope: str | None = None
    patient_id_system: str = "urn:dicomhub:patient-id"
    # IANA zone of DICOM dates and times that carry no TimezoneOffsetFromUTC; unset: the
    # ImagingStudy gets the date only (a FHIR dateTime with a time needs a zone).
    dicom_timezone: str | None = None
    # Origins whose pages may call the API from a browser (CORS): none by default, since a
    # page of any site the user visits could otherwise read the archive. A list, or one
    # comma-separated string in the environment; "*" allows every origin.
    cors_origins: Annotated[list[str], NoDecode] = []
    # The OHIF viewer's dist served at /viewer (`make viewer` installs it here); relative to
    # the working directory.
    viewer_dir: Path = Path(".viewer/dist")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            # a JSON list (the pydantic-settings form of lists) or comma-separated origins
            value = json.loads(text) if text.startswith("[") else text.split(",")
            value = [v for v in value if str(v).strip()]
        if not isinstance(value, list):
            return value
        origins: list[str] = []
        for raw in value:
            origin = str(raw).strip().rstrip("/")
            # Browsers send Origin as scheme://host[:port], lower case, with no path.
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"cors_origins: {raw!r} is not an origin like https://viewer.example.org "
                    "or http://localhost:3000 (scheme, host and port only), nor *"
                )
            origins.append(origin.lower())
        return ["*"] if "*" in origins else list(dict.fromkeys(origins))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # Auth does not exist yet, so anything but loopback is open to the network.
        if not is_loopback(self.host) and not self.insecure:
            raise ValueError(
                f"refusing to listen on {self.host}: access control is not available yet, "
                "so only a loopback address is safe; pass --insecure (DICOMHUB_INSECURE=true) "
                "to accept that anyone who can reach the port can read and delete data"
            )
        if self.qido_default_limit > self.qido_max_limit:
            raise ValueError("qido_default_limit must not exceed qido_max_limit")
        if self.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        oauth = (self.fhir_token_url, self.fhir_client_id, self.fhir_client_secret)
        if any(oauth) and not all(oauth):
            raise ValueError(
                "OAuth2 client credentials need fhir_token_url, fhir_client_id and "
                "fhir_client_secret together"
            )
        if any(oauth) and self.fhir_token:
            raise ValueError("give fhir_token or OAuth2 client credentials, not both")
        if self.dicom_timezone is not None:
            try:
                ZoneInfo(self.dicom_timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"dicom_timezone: unknown zone {self.dicom_timezone!r}") from exc
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def base_url(self) -> str:
        """What clients use to reach this server (public_url, else the address it binds)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

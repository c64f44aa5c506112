"""The `dicomhub` command: serve, import, migrate (thin: options to Settings to services)."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dicomhub.bootstrap import build_services, prepare_storage
from dicomhub.config import CONFIG_ENV, Settings
from dicomhub.context import Origin, RequestContext
from dicomhub.errors import DicomhubError
from dicomhub.services.store import InstanceOutcome, StoreService, StoreStatus

__all__ = ["app", "main"]

app = typer.Typer(
    name="dicomhub",
    help="A self-hosted DICOMweb archive. Every option is also a DICOMHUB_<NAME> variable.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
log = logging.getLogger("dicomhub")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help=f"TOML file with the same keys as the options ({CONFIG_ENV}).", exists=True
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder for blobs and the SQLite index (DICOMHUB_DATA_DIR)."),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the index, e.g. postgresql+psycopg://user@host/db "
        "(DICOMHUB_DATABASE_URL; default: SQLite in the data folder).",
    ),
]


def _settings(config: Path | None, **options: object) -> Settings:
    """Explicit options go to the environment too, so that worker processes see the same values."""
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    for name, value in options.items():
        if value is not None and value is not False:
            os.environ[f"DICOMHUB_{name.upper()}"] = str(value)
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            console.print(
                f"[red]configuration error[/red] {where + ': ' if where else ''}{err['msg']}"
            )
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"[red]configuration error[/red] {exc}")
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pydicom warns about odd input through `warnings`; the server reports those per instance.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (DICOMHUB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (DICOMHUB_PORT).")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (DICOMHUB_WORKERS; default: one per CPU, at most 8)."),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow a non-loopback address without access control."),
    ] = False,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning (DICOMHUB_LOG_LEVEL).")
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated origins whose web pages may call the API, e.g. "
            "https://viewer.example.org (DICOMHUB_CORS_ORIGINS; default: none)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the DICOMweb server."""
    import uvicorn

    settings = _settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir.resolve() if data_dir else None,
        database_url=database_url,
        workers=workers,
        insecure=insecure,
        log_level=log_level,
        cors_origins=cors_origins,
    )
    _logging(settings.log_level)
    try:
        prepare_storage(settings)
    except DicomhubError as exc:
        console.print(f"[red]cannot start:[/red] {exc.message}")
        raise typer.Exit(1) from None
    db_url = settings.resolved_database_url
    shown = _describe(db_url)
    log.info(
        "dicomhub %s listening on http://%s:%d (DICOMweb under /dicom-web, /v1, /v2); "
        "index %s; blobs in %s; %d worker(s)",
        _version(),
        settings.host,
        settings.port,
        shown,
        settings.blob_dir.resolve(),
        settings.workers,
    )
    uvicorn.run(
        "dicomhub.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_keep_alive=30,
        # uvicorn replaces a worker that does not answer its health check in time (5 s by
        # default); a worker still importing the app on a loaded machine was replaced for ever.
        timeout_worker_healthcheck=60,
    )


def _describe(database_url: str) -> str:
    """The index URL for logs: the backend and where it is, never the password."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _version() -> str:
    from dicomhub import __version__

    return __version__


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield path


# Files stored per index transaction: one commit (and one directory fsync) per chunk.
_IMPORT_BATCH = 32


def _store_chunk(
    store: StoreService, ctx: RequestContext, paths: list[Path]
) -> list[tuple[Path, InstanceOutcome | str]]:
    """Store files as one batch, like a multipart STOW; unreadable files are reported by name."""
    batch = store.begin(ctx)
    stored: list[Path] = []
    results: list[tuple[Path, InstanceOutcome | str]] = []
    try:
        for path in paths:
            writer = batch.part()
            try:
                with path.open("rb") as fh:
                    while chunk := fh.read(1024 * 1024):
                        writer.write(chunk)
            except OSError as exc:
                writer.abort()
                results.append((path, f"cannot read: {exc.strerror or exc}"))
                continue
            batch.add(writer)
            stored.append(path)
        outcome = batch.commit()
    except BaseException:
        batch.abort()
        raise
    results.extend(zip(stored, outcome.instances, strict=True))
    return results


@app.command("import")
def import_(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and folders (searched recursively).", exists=True)
    ],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Store DICOM files through the same path as STOW-RS, with progress and a summary."""
    settings = _settings(
        config, data_dir=data_dir.resolve() if data_dir else None, database_url=database_url
    )
    _logging("warning")
    prepare_storage(settings)
    services = build_services(settings)
    ctx = RequestContext(origin=Origin.CLI, principal="cli")
    files = list(_files(paths))
    counts: Counter[str] = Counter()
    failures: list[tuple[Path, str]] = []
    try:
        with Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
        ) as progress:
            task = progress.add_task("import", total=len(files), current="")
            for start in range(0, len(files), _IMPORT_BATCH):
                chunk = files[start : start + _IMPORT_BATCH]
                progress.update(task, current=chunk[-1].name[-40:])
                for path, result in _store_chunk(services.store, ctx, chunk):
                    if isinstance(result, str):
                        counts["failed"] += 1
                        failures.append((path, result))
                    elif result.status is StoreStatus.ALREADY_STORED:
                        counts["already present"] += 1
                    elif result.stored:
                        counts["stored"] += 1
                    else:
                        counts["failed"] += 1
                        failures.append((path, result.message))
                progress.advance(task, len(chunk))
        services.db.analyze()
    finally:
        services.close()
    table = Table(title="import summary")
    table.add_column("result")
    table.add_column("files", justify="right")
    for key in ("stored", "already present", "failed"):
        table.add_row(key, str(counts[key]))
    Console().print(table)
    for path, reason in failures:
        console.print(f"[red]failed[/red] {path}: {reason}")
    if counts["failed"]:
        raise typer.Exit(1)


fhir_app = typer.Typer(help="The embedded FHIR R4 store.", no_args_is_help=True)
app.add_typer(fhir_app, name="fhir")


@fhir_app.command("import")
def fhir_import(
    paths: Annotated[
        list[Path],
        typer.Argument(help="NDJSON files (one resource per line), Bundles, folders.", exists=True),
    ],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load FHIR resources, keeping their ids; references between them keep working."""
    from dicomhub.fhir.bulk import BulkLoader, read_resources

    settings = _settings(
        config, data_dir=data_dir.resolve() if data_dir else None, database_url=database_url
    )
    _logging("warning")
    prepare_storage(settings)
    services = build_services(settings)
    files = [
        f
        for f in _files(paths)
        if f.suffix.lower() in (".ndjson", ".jsonl", ".json") and f.name != "log.ndjson"
    ]
    ctx = RequestContext(origin=Origin.CLI, principal="cli")
    try:
        # Read inside load(): its validation workers start before the input fills memory.
        sources = (item for f in files for item in read_resources(f))
        with Progress(
            TextColumn("[bold]loading"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("load", total=None)
            report = BulkLoader(services.fhir.service).load(
                ctx,
                sources,
                lambda n: progress.advance(task, n),
                lambda n: progress.update(task, total=n),
            )
        services.db.analyze()  # the searches that follow plan with the new data's statistics
    finally:
        services.close()
    table = Table(title="FHIR import summary")
    table.add_column("resource type")
    table.add_column("loaded", justify="right")
    for res_type, count in sorted(report.loaded.items()):
        table.add_row(res_type, str(count))
    table.add_row("[bold]total", f"[bold]{report.total}")
    Console().print(table)
    for res_type, count in sorted(report.unresolved.items()):
        console.print(
            f"[yellow]{count} conditional reference(s) to {res_type} matched nothing; kept as written"
        )
    for where, reason in report.failed[:50]:
        console.print(f"[red]failed[/red] {where}: {reason}")
    if len(report.failed) > 50:
        console.print(f"[red]… and {len(report.failed) - 50} more failures")
    if report.failed:
        raise typer.Exit(1)


@app.command()
def migrate(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, config: ConfigOpt = None
) -> None:
    """Create or upgrade the index schema, then exit (serve and import also do this)."""
    settings = _settings(
        config, data_dir=data_dir.resolve() if data_dir else None, database_url=database_url
    )
    _logging("info")
    prepare_storage(settings)
    console.print(f"index is up to date: {_describe(settings.resolved_database_url)}")


sync_app = typer.Typer(
    help="DICOM -> FHIR sync (also runs inside `dicomhub serve` unless DICOMHUB_FHIR_SYNC=false).",
    invoke_without_command=True,
)
app.add_typer(sync_app, name="sync")
FhirUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--fhir-url", help="External FHIR R4 base URL (DICOMHUB_FHIR_URL; default: embedded)."
    ),
]


PublicUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--public-url",
        help="The server's URL as clients see it, for the Endpoint's address "
        "(DICOMHUB_PUBLIC_URL; default http://HOST:PORT of the settings).",
    ),
]


def _sync_worker(
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    fhir_url: str | None,
    public_url: str | None,
) -> tuple[Settings, Any, Any]:
    from dicomhub.bootstrap import build_sync_worker

    settings = _settings(
        config,
        data_dir=data_dir.resolve() if data_dir else None,
        database_url=database_url,
        fhir_url=fhir_url,
        public_url=public_url,
    )
    prepare_storage(settings)
    services = build_services(settings)
    return settings, services, build_sync_worker(settings, services)


@sync_app.callback()
def sync_run(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    fhir_url: FhirUrlOpt = None,
    public_url: PublicUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Follow the change feed and keep FHIR in step, until stopped (Ctrl-C)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (config, data_dir, database_url, fhir_url, public_url)
        return
    import signal
    import threading

    _logging("info")
    _, services, worker = _sync_worker(config, data_dir, database_url, fhir_url, public_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("FHIR sync to %s running as %s", worker.target, worker.owner)
    worker.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command is meant to end
    finally:
        worker.stop()
        services.close()


@sync_app.command("status")
def sync_status(ctx: typer.Context) -> None:
    """Cursor, backlog, lease and dead-lettered studies of the sync target."""
    from dicomhub.storage import sync as sync_store

    _logging("warning")
    _, services, worker = _sync_worker(*ctx.obj)
    try:
        with services.db.read() as conn:
            state = sync_store.state(conn, worker.target)
            latest = sync_store.latest_sequence(conn)
            letters = sync_store.dead_letters(conn, worker.target)
    finally:
        services.close()
    done = state.sequence if state else 0
    table = Table(title=f"FHIR sync to {worker.target}")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("change-feed sequence done", str(done))
    table.add_row("latest sequence", str(latest))
    table.add_row("backlog (changes)", str(max(latest - done, 0)))
    table.add_row(
        "lease",
        f"{state.lease_owner} until {state.lease_until}" if state and state.lease_owner else "free",
    )
    table.add_row("dead-lettered studies", str(len(letters)))
    Console().print(table)
    for letter in letters:
        Console().print(
            f"{letter.study_uid}: {letter.attempts} attempt(s), last {letter.last_failed_at}: "
            f"{letter.reason}"
        )


@sync_app.command("retry")
def sync_retry(
    ctx: typer.Context,
    studies: Annotated[
        list[str] | None, typer.Argument(help="Study UIDs (default: every dead-lettered one).")
    ] = None,
) -> None:
    """Sync dead-lettered studies again now; those that succeed leave the dead-letter table."""
    _logging("warning")
    _, services, worker = _sync_worker(*ctx.obj)
    try:
        outcomes = worker.retry_dead_letters(studies or None)
    finally:
        services.close()
    for study, outcome in outcomes.items():
        Console().print(f"{study}: {outcome}")
    if not outcomes:
        Console().print("no dead-lettered study to retry")
    if any(o == "dead-lettered" for o in outcomes.values()):
        raise typer.Exit(1)


def main() -> None:
    app()

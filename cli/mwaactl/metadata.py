"""mwaactl metadata: back up, restore, verify and list Airflow metadata against any metadata
database URL (self-hosted Airflow, tests) and a local directory or s3://bucket/prefix, with a KMS
key or, outside AWS, a local key (a key file or MWAA_CONTROL_LOCAL_KEY; never an argument)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mwaa_control.metadata.errors import MetadataError

if TYPE_CHECKING:
    from mwaa_control.metadata.sealing import KeyService
    from mwaa_control.metadata.store import BackupStore

# `mwaactl --help` and argument errors must answer at once: the engines (pyarrow, SQLAlchemy,
# psycopg, boto3) load inside the commands that use them (tests/unit/test_cold_imports.py).

metadata = typer.Typer(help="Back up, restore, verify and list Airflow metadata.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

DbUrl = Annotated[str, typer.Option("--db-url", help="SQLAlchemy URL of the Airflow metadata database")]
Environment = Annotated[
    str, typer.Option("--environment", "-e", help="environment name (its backups: backups/ENVIRONMENT/)")
]
KmsKey = Annotated[
    str | None,
    typer.Option(
        "--kms-key-id",
        help="KMS key of the backups (id, ARN or alias): seals secrets and authenticates each backup",
    ),
]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="instead of KMS (Airflow outside AWS): a local key file (32 random bytes, or their base64 or hex; "
        "mode 0600; `mwaactl metadata keygen` makes one). Or set MWAA_CONTROL_LOCAL_KEY to its base64. "
        "There is no option for the key itself: shell history and ps would show it.",
    ),
]
SourceEnvironment = Annotated[
    str | None,
    typer.Option(
        "--source-environment",
        help="restore a backup written for ANOTHER environment (default: the target --environment); "
        "the backup is authenticated as that environment's",
    ),
]
AllowUnauthenticated = Annotated[
    bool,
    typer.Option(
        "--allow-unauthenticated",
        help="DANGEROUS: restore a backup that cannot be authenticated (no manifest.mac: written without "
        "a key (KMS or local) or by an older version). Anyone who can write the backup bucket can write such a "
        "backup, and restored pickles run code when Airflow reads them (they are still checked). Use "
        "only for a backup whose origin you know. A backup that FAILS authentication is refused anyway.",
    ),
]
FernetEnv = Annotated[
    str,
    typer.Option(
        "--fernet-key-env",
        help="environment variable holding the Fernet key (never pass keys as arguments: ps shows them)",
    ),
]
Region = Annotated[str | None, typer.Option(help="AWS region (default: the SDK's)")]
DRAIN = "Drain (before backing up)"
"""The drain options, a panel of their own: in one table with the others, their --no- forms leave
the help column too narrow at 80 columns for the names it quotes."""
NO_KEY_TO_CHOOSE = (
    "give --backup-id, or a key (--kms-key-id, --key-file or MWAA_CONTROL_LOCAL_KEY) to find the newest "
    "authenticated backup"
)


def _fail(error: Exception) -> None:
    errors.print(f"[red]error:[/red] {error}", soft_wrap=True)
    raise typer.Exit(1)


def _keys(kms_key_id: str | None, key_file: Path | None, region: str | None) -> KeyService | None:
    """The one key of the backups: a KMS key, a local key file, or a local key in the environment."""
    from mwaa_control.metadata.sealing import LOCAL_KEY_ENV, LocalKeyService  # noqa: PLC0415 - see the note above

    local_key = os.environ.get(LOCAL_KEY_ENV) or None
    given = [
        name
        for name, value in (("--kms-key-id", kms_key_id), ("--key-file", key_file), (LOCAL_KEY_ENV, local_key))
        if value
    ]
    if len(given) > 1:
        raise MetadataError(f"{' and '.join(given)} each give the backups' key: give exactly one")
    if key_file is not None:
        return LocalKeyService.from_file(key_file)
    if local_key is not None:
        return LocalKeyService.from_text(local_key)
    if not kms_key_id:
        return None
    from mwaa_control.adapters.clients import client  # noqa: PLC0415
    from mwaa_control.metadata.sealing import KmsKeyService  # noqa: PLC0415

    return KmsKeyService(client("kms", region=region), kms_key_id)


def _store(location: str, kms_key_id: str | None, region: str | None) -> BackupStore:
    from mwaa_control.adapters.clients import client  # noqa: PLC0415 - see the note above
    from mwaa_control.metadata.store import open_store  # noqa: PLC0415

    s3 = client("s3", region=region) if location.startswith("s3://") else None
    return open_store(location, s3=s3, kms_key_id=kms_key_id)


@metadata.command("backup")
def backup(
    db_url: DbUrl,
    to: Annotated[str, typer.Option("--to", help="directory or s3://bucket/prefix")],
    environment: Environment,
    kms_key_id: KmsKey = None,
    key_file: KeyFile = None,
    fernet_key_env: FernetEnv = "AIRFLOW__CORE__FERNET_KEY",
    airflow_version: Annotated[str | None, typer.Option(help="recorded in the manifest")] = None,
    drain: Annotated[
        bool, typer.Option(help="pause DAGs and wait for running tasks first", rich_help_panel=DRAIN)
    ] = False,
    drain_timeout: Annotated[
        float, typer.Option(help="seconds to wait for running tasks", rich_help_panel=DRAIN)
    ] = 1800,
    on_timeout: Annotated[
        str, typer.Option(help="abort | proceed (record what is in flight)", rich_help_panel=DRAIN)
    ] = "abort",
    leave_paused: Annotated[
        bool, typer.Option(help="keep DAGs paused afterwards (before a pause)", rich_help_panel=DRAIN)
    ] = False,
    region: Region = None,
) -> None:
    """Back up the metadata database to a new backups/{environment}/{backup_id}/.

    Give --kms-key-id or a local key (--key-file, MWAA_CONTROL_LOCAL_KEY):
    without a key the backup cannot be authenticated, and restores refuse it by
    default."""
    from mwaa_control.metadata.backup import BackupEngine, BackupRequest, Drain  # noqa: PLC0415 - see the note above
    from mwaa_control.metadata.database import open_database  # noqa: PLC0415

    if on_timeout not in ("abort", "proceed"):
        _fail(ValueError("--on-timeout is abort or proceed"))
    try:
        keys = _keys(kms_key_id, key_file, region)
        if keys is None:
            errors.print(
                "[yellow]warning:[/yellow] no key (--kms-key-id, --key-file or MWAA_CONTROL_LOCAL_KEY): "
                "this backup cannot be authenticated"
            )
        engine = BackupEngine(open_database(db_url), _store(to, kms_key_id, region))
        request = BackupRequest(
            environment=environment,
            keys=keys,
            source_fernet_key=os.environ.get(fernet_key_env),
            airflow_version=airflow_version,
            drain=Drain(timeout=drain_timeout, on_timeout=on_timeout, leave_paused=leave_paused) if drain else None,
        )
        manifest = engine.backup(request)
    except MetadataError as error:
        _fail(error)
    rows = sum(t.rows for t in manifest.tables.values())
    console.print(
        f"backup [bold]{manifest.backup_id}[/bold]: {len(manifest.tables)} tables, {rows} rows, "
        f"{manifest.sealed_values} secrets sealed, {len(manifest.in_flight)} task instances in flight"
    )


@metadata.command("restore")
def restore(
    db_url: DbUrl,
    from_: Annotated[str, typer.Option("--from", help="directory or s3://bucket/prefix")],
    environment: Environment,
    backup_id: Annotated[str | None, typer.Option(help="default: the newest AUTHENTICATED backup")] = None,
    kms_key_id: KmsKey = None,
    key_file: KeyFile = None,
    fernet_key_env: FernetEnv = "AIRFLOW__CORE__FERNET_KEY",
    source_environment: SourceEnvironment = None,
    allow_unauthenticated: AllowUnauthenticated = False,
    accept_unverifiable_fernet_key: Annotated[
        bool,
        # Described in the docstring: the options table cuts a name this long at 80 columns.
        typer.Option("--accept-unverifiable-fernet-key", hidden=True),
    ] = False,
    repair_secrets: Annotated[
        bool,
        typer.Option(
            "--repair-secrets",
            help="the backup was restored under a wrong Fernet key: rewrite the secrets of the rows it restored "
            "(variables, connections, trigger kwargs) from the backup under the given key. Nothing else changes.",
        ),
    ] = False,
    trust_trigger_module: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-trigger-module",
            help="a module whose trigger classes may be restored besides Airflow's and providers' own "
            "(repeatable); the triggerer imports and calls them",
        ),
    ] = None,
    region: Region = None,
) -> None:
    """Restore a backup into a migrated Airflow database of the same version.

    All or nothing, and only once the backup is authenticated (give
    --kms-key-id, --key-file or MWAA_CONTROL_LOCAL_KEY).

    --accept-unverifiable-fernet-key: restore secrets although the target holds
    no encrypted value that proves the Fernet key is its own (a new
    environment). A wrong key makes them unreadable: --repair-secrets with the
    right key rewrites them."""
    from mwaa_control.metadata.database import open_database  # noqa: PLC0415 - see the note above
    from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest  # noqa: PLC0415
    from mwaa_control.metadata.verify import latest_backup  # noqa: PLC0415

    source = source_environment or environment
    try:
        store = _store(from_, kms_key_id, region)
        keys = _keys(kms_key_id, key_file, region)
        if backup_id is None and keys is None:
            raise MetadataError(NO_KEY_TO_CHOOSE)
        chosen = backup_id or latest_backup(store, source, keys)  # type: ignore[arg-type]
        report = RestoreEngine(open_database(db_url), store).restore(
            RestoreRequest(
                environment=environment,
                backup_id=chosen,
                keys=keys,
                target_fernet_key=os.environ.get(fernet_key_env),
                source_environment=source,
                allow_unauthenticated=allow_unauthenticated,
                accept_unverifiable_fernet_key=accept_unverifiable_fernet_key,
                repair_secrets=repair_secrets,
                trusted_trigger_prefixes=tuple(trust_trigger_module or ()),
            )
        )
    except MetadataError as error:
        _fail(error)
    inserted = sum(t.inserted for t in report.tables)
    matched = sum(t.matched for t in report.tables)
    console.print(
        f"{report.status} {chosen}: {inserted} rows inserted, {matched} matched existing rows, "
        f"{report.reencrypted_values} secrets re-encrypted"
    )
    if report.fernet_key_verified is False:
        errors.print("[yellow]Fernet key NOT VERIFIED:[/yellow] the target held no encrypted value to prove it")
    for note in report.notes:
        console.print(f"note: {note}", soft_wrap=True)
    if not report.authenticated:
        errors.print(f"[red]NOT AUTHENTICATED:[/red] {'; '.join(report.problems)}", soft_wrap=True)
    elif report.problems:
        errors.print(f"[yellow]problems:[/yellow] {'; '.join(report.problems)}", soft_wrap=True)


@metadata.command("verify")
def verify(
    from_: Annotated[str, typer.Option("--from", help="directory or s3://bucket/prefix")],
    environment: Environment,
    backup_id: Annotated[str | None, typer.Option(help="default: the newest authenticated backup")] = None,
    db_url: Annotated[str | None, typer.Option("--db-url", help="also check this restored database")] = None,
    kms_key_id: KmsKey = None,
    key_file: KeyFile = None,
    fernet_key_env: FernetEnv = "AIRFLOW__CORE__FERNET_KEY",
    region: Region = None,
) -> None:
    """Check a backup, and optionally a database restored from it.

    The backup's authenticity (with a KMS or local key), its files against its
    manifest and its pickled values; with --db-url, a restored database against
    it."""
    from rich.table import Table  # noqa: PLC0415 - see the note above

    from mwaa_control.metadata.database import open_database  # noqa: PLC0415
    from mwaa_control.metadata.verify import latest_backup, verify_backup, verify_restore  # noqa: PLC0415

    try:
        store = _store(from_, None, region)
        keys = _keys(kms_key_id, key_file, region)
        if backup_id is None and keys is None:
            raise MetadataError(NO_KEY_TO_CHOOSE)
        chosen = backup_id or latest_backup(store, environment, keys)  # type: ignore[arg-type]
        report = verify_backup(store, environment, chosen, keys)
        if db_url and report.ok:
            report = verify_restore(
                open_database(db_url), store, environment, chosen, os.environ.get(fernet_key_env), keys=keys
            )
    except MetadataError as error:
        _fail(error)
    table = Table("table", "in backup", "in target", "missing keys", "ok")
    for check in report.tables:
        table.add_row(
            check.table,
            str(check.in_backup),
            "" if check.in_target is None else str(check.in_target),
            "" if check.missing_keys is None else str(check.missing_keys),
            "yes" if check.ok else "[red]NO[/red]",
        )
    console.print(table)
    for problem in report.problems:
        errors.print(f"[red]problem:[/red] {problem}")
    if report.authenticated is not True:
        errors.print(f"[yellow]authentication:[/yellow] {report.authentication}", soft_wrap=True)
    console.print(f"{report.checked} {chosen}: {'[green]verified[/green]' if report.ok else '[red]FAILED[/red]'}")
    if not report.ok:
        raise typer.Exit(1)


@metadata.command("list")
def list_(
    from_: Annotated[str, typer.Option("--from", help="directory or s3://bucket/prefix")],
    environment: Annotated[str | None, typer.Option("--environment", "-e")] = None,
    kms_key_id: KmsKey = None,
    key_file: KeyFile = None,
    region: Region = None,
) -> None:
    """List complete backups (those with a manifest), oldest first, and whether each verifies.

    "verified" (authenticated), "damaged" (truncated or unparsable manifest, no
    manifest.mac, MAC mismatch, the key refusing or failing: never restored) or
    "not checked" (no key given). With a KMS key, authenticating takes one KMS
    call per backup; with a local key, none."""
    from rich.table import Table  # noqa: PLC0415 - see the note above

    from mwaa_control.metadata.verify import list_backups  # noqa: PLC0415

    try:
        backups = list_backups(_store(from_, None, region), environment, _keys(kms_key_id, key_file, region))
    except MetadataError as error:
        _fail(error)
    table = Table("environment", "backup id", "created", "airflow", "tables", "rows", "bytes", "in flight", "status")
    for item in backups:
        table.add_row(
            item.environment,
            item.backup_id,
            item.created_at,
            item.airflow_version or "?",
            str(item.tables),
            str(item.rows),
            str(item.bytes),
            str(item.in_flight),
            {"verified": "[green]verified[/green]", "damaged": "[red]damaged[/red]"}.get(item.status, item.status),
        )
    console.print(table)
    counts = {
        status: sum(1 for b in backups if b.status == status) for status in ("verified", "damaged", "not checked")
    }
    console.print(f"{len(backups)} backups: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    for item in backups:
        if item.authenticated is not True:
            console.print(f"{item.environment}/{item.backup_id}: {item.status}: {item.authentication}", soft_wrap=True)


@metadata.command("keygen")
def keygen(
    path: Annotated[Path, typer.Argument(help="the new key file (mode 0600); an existing file is never overwritten")],
) -> None:
    """Make a local key (256 bits, random) for backups outside AWS.

    Use it with --key-file PATH, or export MWAA_CONTROL_LOCAL_KEY="$(cat PATH)".
    Keep a copy somewhere safe: backups sealed with it cannot be restored
    without it."""
    from mwaa_control.metadata.sealing import generate_key_file  # noqa: PLC0415 - see the note above

    try:
        keys = generate_key_file(path)
    except MetadataError as error:
        _fail(error)
    console.print(f"local key [bold]{keys.key_id}[/bold] written to {path} (mode 0600)", soft_wrap=True)

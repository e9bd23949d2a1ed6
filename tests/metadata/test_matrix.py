"""The release matrix: backup -> restore into a target that already holds rows -> restore again ->
verify, on every Airflow release of the Makefile's AIRFLOW_MATRIX, on SQLite and PostgreSQL.

Each cell seeds a real database of its release with hostile data (localcloud/airflow/seed_matrix.py),
backs it up, makes a target of the same release that already holds rows (the DAG processor run once
over a DAG folder with datasets, a pool and an encrypted connection), restores under the target's
own Fernet key, restores again, and verifies. Its figures go to build/matrix/<cell>.json before any
assertion (a failing cell is in the table too) and the table of every cell so far to build/matrix.md.

Marked `matrix`: `make test-matrix` runs it (`make test` runs it after the fast tier)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from moto import mock_aws

from localcloud import LocalCloud
from localcloud.airflow.backend import ROOT, AirflowBackend
from localcloud.airflow.seed_matrix import prepare_target, seed_source
from localcloud.network import build_shared_vpc
from localcloud.postgres import PostgresServer
from mwaa_control.composition import airflow_client
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import backup_prefix
from mwaa_control.metadata.rest_path import RestBackup, RestRestore
from mwaa_control.metadata.restore import RESTORED_ROLES, RestoreEngine, RestoreRequest
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore
from mwaa_control.metadata.verify import verify_restore
from tests.airflow.conftest import HELLO_DAG
from tests.airflow.test_metadata_rest import SEED, VARIABLES
from tests.conftest import create_request
from tests.metadata.compare import decrypt, expected_target, multiset, read_table, without_ledger, without_task_token

# The Makefile's AIRFLOW_MATRIX (test_the_matrix_is_the_makefiles keeps the two equal).
RELEASES = ["2.7.2", "2.8.1", "2.9.2", "2.10.1", "2.10.3", "2.11.0", "2.11.2", "3.0.6", "3.2.1", "3.3.1"]
DIALECTS = ["sqlite", "postgresql"]
OUT = ROOT / "build" / "matrix"
TABLE = ROOT / "build" / "matrix.md"
ENVIRONMENT = "etl-prod"


@dataclass
class Figures:
    """One cell of build/matrix.md."""

    release: str
    dialect: str
    path: str = "database"
    stage: str = "seed"
    """The last stage reached: seed, target, backup, restore, second-restore, verify, done."""
    tables_equal: int = 0
    tables_restored: int = 0
    differing: list[str] = field(default_factory=list)
    differences: dict[str, str] = field(default_factory=dict)
    """Per differing table: row counts and the first unexpected and missing rows (for the report)."""
    plaintext_secrets: int = -1
    secret_hits: list[str] = field(default_factory=list)
    second_unchanged: bool | None = None
    second_status: str = ""
    verify_ok: bool | None = None
    verify_problems: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.stage == "done"
            and self.tables_restored > 0
            and self.tables_equal == self.tables_restored
            and self.plaintext_secrets == 0
            and bool(self.second_unchanged)
            and bool(self.verify_ok)
        )


def _cells() -> list[Any]:
    cells = []
    for release in RELEASES:
        for dialect in DIALECTS:
            cells.append(pytest.param(release, dialect, marks=[pytest.mark.matrix], id=f"{release}-{dialect}"))
    return cells


def _engine_url(backend: AirflowBackend) -> str:
    url = backend.db_url or f"sqlite:///{backend.home / 'airflow.db'}"
    return url.replace("postgresql+psycopg2://", "postgresql+psycopg://")


def _dump(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    try:
        tables = sorted(t for t in sa.inspect(engine).get_table_names() if not t.startswith("sqlite_"))
        return {t: read_table(engine, t) for t in tables}
    finally:
        engine.dispose()


def _without_json_task_token(row: dict[str, Any]) -> dict[str, Any]:
    """Airflow 3 keeps a run's conf as JSON (read back as text here): the same comparison as
    compare.without_task_token does for Airflow 2's pickles."""
    conf = row.get("conf")
    if not isinstance(conf, str) or "mwaa_control" not in conf:
        return without_task_token(row)
    loaded = json.loads(conf)
    block = loaded.get("mwaa_control")
    if isinstance(block, dict):
        loaded["mwaa_control"] = {k: v for k, v in block.items() if k != "task_token"}
    return {**row, "conf": json.dumps(loaded, sort_keys=True)}


def secrets_in_backup(folder: Path, markers: list[str]) -> list[str]:
    """`marker in file` for every seeded secret found in plaintext in any file of the backup, Parquet
    values decoded too (pages are compressed)."""
    hits: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        blobs = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":
            blobs.append(json.dumps(pq.read_table(path).to_pylist(), default=repr, ensure_ascii=False))
        hits.extend(f"{m} in {path.name}" for m in markers if any(m in blob for blob in blobs))
    return hits


def render(figures: list[Figures]) -> str:
    def mark(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "**no**")

    lines = [
        "| Airflow | database | path | tables equal | secrets in plaintext | 2nd restore changed nothing |"
        " verify | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {r: i for i, r in enumerate(RELEASES)}
    for f in sorted(figures, key=lambda f: (order.get(f.release, 99), f.dialect, f.path)):
        equal = f"{f.tables_equal}/{f.tables_restored}" if f.tables_restored else "-"
        if f.differing:
            equal += f" (differ: {', '.join(f.differing[:4])}{', ...' if len(f.differing) > 4 else ''})"
        secrets = "-" if f.plaintext_secrets < 0 else str(f.plaintext_secrets)
        verify = mark(f.verify_ok)
        result = "pass" if f.passed else f"FAIL at {f.stage}" + (f": {_short(f.error)}" if f.error else "")
        lines.append(
            f"| {f.release} | {f.dialect} | {f.path} | {equal} | {secrets} | {mark(f.second_unchanged)} | {verify}"
            f" | {result} ({f.seconds:.0f}s) |"
        )
    return "\n".join(lines) + "\n"


def _short(error: str) -> str:
    last = [line for line in error.strip().splitlines() if line.strip()][-1:] or [""]
    return re.sub(r"\s+", " ", last[0]).replace("|", "/")[:320]


def record(figures: Figures, out: Path = OUT, table: Path = TABLE) -> None:
    """Writes this cell's figures and re-renders the table from every cell written so far, under a
    lock: the cells run in two xdist workers."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        name = f"{figures.release}-{figures.dialect}-{figures.path}.json"
        (out / name).write_text(json.dumps(asdict(figures), indent=2, ensure_ascii=False))
        cells = [Figures(**json.loads(p.read_text())) for p in sorted(out.glob("*.json"))]
        staged = table.with_suffix(".tmp")
        staged.write_text(render(cells))
        os.replace(staged, table)


def _detached(rows: list[dict[str, Any]], table: str, schema: Any) -> list[dict[str, Any]]:
    """The source's rows as the restore writes them before mapping ids: references to tables it
    does not restore (Airflow 3's DAG versions, web users) cleared, as their ids mean nothing in
    the target (restore.py's `_remap`). compare.expected_target clears only integer-id parents."""
    columns = [
        ref.columns[0]
        for ref in schema.tables[table].references
        if len(ref.columns) == 1
        and ref.parent != table
        and ref.parent in schema.tables
        and schema.tables[ref.parent].role not in RESTORED_ROLES
    ]
    return [{**row, **dict.fromkeys(columns)} for row in rows] if columns else rows


def _compare(
    figures: Figures,
    source_rows: dict[str, list[dict[str, Any]]],
    before: dict[str, list[dict[str, Any]]],
    after: dict[str, list[dict[str, Any]]],
    report: Any,
    schema: Any,
    source_key: str,
    target_key: str,
) -> None:
    restored = sorted(t.table for t in report.tables)
    figures.tables_restored = len(restored)
    for table in restored:
        source = decrypt(_detached(source_rows.get(table, []), table, schema), table, source_key)
        earlier = decrypt(before.get(table, []), table, target_key)
        actual = decrypt(without_ledger(table, after.get(table, [])), table, target_key)
        if table == "dag_run":
            source = [_without_json_task_token(r) for r in source]
            actual = [_without_json_task_token(r) for r in actual]
        expected = expected_target(table, source, earlier, schema, report)
        got, wanted = multiset(actual), multiset(expected)
        if got == wanted:
            figures.tables_equal += 1
        else:
            figures.differing.append(table)
            unexpected, missing = list((got - wanted).elements()), list((wanted - got).elements())
            figures.differences[table] = (
                f"{len(actual)} rows, {len(expected)} expected; unexpected {unexpected[:1]}; missing {missing[:1]}"
            )[:1500]


@pytest.fixture
def kms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


@pytest.mark.parametrize(("release", "dialect"), _cells())
def test_round_trip_into_a_target_that_holds_rows(
    release: str, dialect: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, kms: Any
) -> None:
    figures = Figures(release, dialect)
    started = time.monotonic()
    tag = f"{release.replace('.', '')}_{dialect[:2]}"
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if dialect == "postgresql" else None

    def backend(role: str) -> AirflowBackend:
        home = tmp_path_factory.mktemp(f"{role}-{tag}")
        url = postgres.create_database(f"mx_{role}_{tag}") if postgres is not None else None
        return AirflowBackend(home, release=release, db_url=url)

    try:
        source, target = backend("src"), backend("dst")
        assert source.fernet_key != target.fernet_key
        seeded = seed_source(source)
        figures.stage = "target"
        prepared = prepare_target(target)
        assert prepared["table_counts"]["connection"] >= 2 and prepared["table_counts"]["slot_pool"] >= 3
        figures.stage = "backup"
        store = LocalStore(tmp_path_factory.mktemp(f"store-{tag}"))
        keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
        source_db, target_db = open_database(_engine_url(source)), open_database(_engine_url(target))
        manifest = BackupEngine(source_db, store).backup(
            BackupRequest(
                environment=ENVIRONMENT, keys=keys, source_fernet_key=source.fernet_key, airflow_version=release
            )
        )
        markers = seeded["secret_markers"] + seeded["plaintext_secret_markers"]
        assert len(markers) >= 8
        figures.secret_hits = secrets_in_backup(
            Path(store.url) / backup_prefix(ENVIRONMENT, manifest.backup_id), markers
        )
        figures.plaintext_secrets = len(figures.secret_hits)
        source_rows = _dump(_engine_url(source))
        before = _dump(_engine_url(target))
        figures.stage = "restore"
        request_ = RestoreRequest(ENVIRONMENT, manifest.backup_id, keys, target.fernet_key)
        report = RestoreEngine(target_db, store).restore(request_)
        after = _dump(_engine_url(target))
        _compare(figures, source_rows, before, after, report, target_db.reflect(), source.fernet_key, target.fernet_key)
        figures.stage = "second-restore"
        second = RestoreEngine(target_db, store).restore(request_)
        figures.second_status = second.status
        again = _dump(_engine_url(target))
        figures.second_unchanged = second.status == "already-restored" and all(
            multiset(again[t]) == multiset(rows) for t, rows in after.items()
        )
        figures.stage = "verify"
        verified = verify_restore(target_db, store, ENVIRONMENT, manifest.backup_id, target.fernet_key)
        figures.verify_ok = verified.ok
        figures.verify_problems = [*verified.problems, *(t.table for t in verified.tables if not t.ok)]
        figures.stage = "done"
    except Exception:
        figures.error = traceback.format_exc()[-3000:]
        raise
    finally:
        figures.seconds = time.monotonic() - started
        record(figures)
    assert figures.plaintext_secrets == 0, figures.secret_hits
    assert figures.tables_equal == figures.tables_restored > 0, figures.differing
    assert figures.second_unchanged, figures.second_status
    assert figures.verify_ok, figures.verify_problems


# -- the REST path (Airflow 3 on MWAA: the API, not the database) ----------------------------------
REST_RELEASES = [r for r in RELEASES if r.startswith("3.")]
REST_SECTIONS = ("variable", "connection", "slot_pool", "dag")


def _rest_state(client: Any) -> dict[str, set[Any]]:
    """What the API path restores, as the target's API shows it (connection passwords are not
    readable through it, and not restored: the manifest says so)."""
    connections = {
        (c["connection_id"], c["conn_type"], c.get("host"), c.get("port"), c.get("login"), c.get("extra"))
        for c in client.paged("/connections", "connections")
    }
    return {
        "variable": {(k, client.variable_from_cli(k)) for k in REST_VARIABLES},
        "connection": connections,
        "slot_pool": {(p["name"], p["slots"], p.get("description")) for p in client.paged("/pools", "pools")},
        "dag": {(d["dag_id"], d["is_paused"]) for d in client.paged("/dags", "dags")},
    }


def _rest_environment(cloud: Any, name: str, release: str) -> tuple[Any, AirflowBackend]:
    vpc = build_shared_vpc(cloud.client("ec2"))
    cloud.client("mwaa").create_environment(
        **create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion=release)
    )
    cloud.run_for(timedelta(minutes=40))
    backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
    backend.ensure_ready()
    assert backend.release == release, f"the emulator runs {backend.release} for AirflowVersion {release}"
    for dag_id in ("hello", "reports"):
        (backend.dags_folder / f"{dag_id}.py").write_text(HELLO_DAG.format(dag_id=dag_id))
    backend.parse_dags()
    return airflow_client(name, mwaa=cloud.client("mwaa")), backend


# The REST path's own test seeds the same (tests/airflow/test_metadata_rest.py).
REST_VARIABLES, REST_SEED = VARIABLES, SEED


@pytest.mark.matrix
@pytest.mark.parametrize("release", REST_RELEASES)
def test_rest_path_round_trip(release: str, tmp_path: Path) -> None:
    """Airflow 3 through the API as MWAA exposes it (InvokeRestApi, the CLI token API), between two
    emulated environments of the exact release: variables, connections (without passwords), pools
    and pause states come back; run history is archived, not restored."""
    figures = Figures(release, "sqlite", path="rest")
    started = time.monotonic()
    try:
        with LocalCloud() as cloud:
            source, source_backend = _rest_environment(cloud, "rest-source", release)
            figures.stage = "target"
            target, _ = _rest_environment(cloud, "rest-target", release)
            seeded = subprocess.run(
                [
                    str(source_backend.venv / "bin" / "python"),
                    "-c",
                    REST_SEED.format(variables=json.dumps(REST_VARIABLES)),
                ],
                env=source_backend.environment(),
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert seeded.returncode == 0, seeded.stderr[-2000:]
            source.set_paused("reports", False)
            target.set_paused("hello", False)  # the target's own state, which the backup overrides
            expected = _rest_state(source)
            figures.stage = "backup"
            kms = cloud.client("kms")
            keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
            store = LocalStore(tmp_path / "store")
            manifest = RestBackup(source, store).backup("rest-source", keys)
            figures.secret_hits = secrets_in_backup(
                Path(store.url) / backup_prefix("rest-source", manifest.backup_id),
                ["SEKRET-var-plain", "SEKRET-redacted-by-the-api", "SEKRET-json", "SEKRET-conn-password"],
            )
            figures.plaintext_secrets = len(figures.secret_hits)
            figures.stage = "restore"
            report = RestRestore(target, store).restore("rest-source", manifest.backup_id, keys)
            after = _rest_state(target)
            figures.tables_restored = len(REST_SECTIONS)
            for section in REST_SECTIONS:
                missing = expected[section] - after[section]
                if missing:
                    figures.differing.append(section)
                    figures.differences[section] = f"missing {sorted(map(str, missing))[:2]}"[:1500]
                else:
                    figures.tables_equal += 1
            figures.stage = "second-restore"
            second = RestRestore(target, store).restore("rest-source", manifest.backup_id, keys)
            # The API has no "write if different" for everything: a re-run writes some variables and
            # pools again (counted as updated); what matters is that nothing the API shows changed.
            rewritten = [t.table for t in second.tables if t.updated or t.inserted]
            figures.second_status = f"rewrote {', '.join(rewritten)}" if rewritten else "no writes"
            figures.second_unchanged = _rest_state(target) == after
            figures.stage = "verify"
            figures.verify_ok = bool(report.verified or second.verified)
            figures.verify_problems = list(second.problems)
            figures.stage = "done"
    except Exception:
        figures.error = traceback.format_exc()[-3000:]
        raise
    finally:
        figures.seconds = time.monotonic() - started
        record(figures)
    assert manifest.not_exported == {"connection.password": ["warehouse"]}
    assert figures.plaintext_secrets == 0, figures.secret_hits
    assert figures.tables_equal == figures.tables_restored, figures.differences
    assert figures.second_unchanged, figures.second_status
    assert figures.verify_ok, figures.verify_problems


# -- the matrix's own checks, in the fast tier ----------------------------------------------------


def test_the_matrix_is_the_makefiles() -> None:
    """RELEASES here and AIRFLOW_MATRIX in the Makefile (what `make matrix-venvs` installs) agree,
    and the fast tier's releases are part of it."""
    makefile = (ROOT / "Makefile").read_text()
    matrix = re.search(r"^AIRFLOW_MATRIX := (.+)$", makefile, re.MULTILINE)
    fast = re.search(r"^AIRFLOW_RELEASES := (.+)$", makefile, re.MULTILINE)
    assert matrix is not None and fast is not None
    assert matrix.group(1).split() == RELEASES
    assert set(fast.group(1).split()) <= set(RELEASES)


def test_the_table_shows_every_cell_and_each_failure(tmp_path: Path) -> None:
    passing = Figures("2.9.2", "sqlite", stage="done", tables_equal=20, tables_restored=20, plaintext_secrets=0)
    passing.second_unchanged, passing.verify_ok = True, True
    leaking = Figures("2.7.2", "postgresql", stage="done", tables_equal=19, tables_restored=20, plaintext_secrets=2)
    leaking.second_unchanged, leaking.verify_ok, leaking.differing = True, True, ["dataset_event"]
    crashed = Figures("3.3.1", "sqlite", stage="restore", error="Traceback ...\nIntegrityError: duplicate key | x\n")
    for figures in (crashed, passing, leaking):
        record(figures, tmp_path / "cells", tmp_path / "matrix.md")
    rows = (tmp_path / "matrix.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[0:2] for r in rows] == [
        ["| 2.7.2", "postgresql"],
        ["| 2.9.2", "sqlite"],
        ["| 3.3.1", "sqlite"],
    ]
    assert "19/20 (differ: dataset_event)" in rows[0] and "| 2 |" in rows[0] and "FAIL at done" in rows[0]
    assert "| 20/20 | 0 | yes | yes | pass" in rows[1]
    assert "FAIL at restore: IntegrityError: duplicate key / x" in rows[2]


def test_secrets_in_backup_finds_markers_inside_compressed_parquet(tmp_path: Path) -> None:
    import pyarrow as pa

    # zstd writes the marker as a back-reference into the repeated "ab-SEKRET-01-" plus a literal "a":
    # it is nowhere in the file's bytes, only in the decoded value.
    values = ["ab-SEKRET-01-" * 40 + "a"]
    pq.write_table(pa.table({"v": values}), tmp_path / "t.parquet", compression="zstd", write_statistics=False)
    (tmp_path / "manifest.json").write_text('{"a": "SEKRET-02-b"}')
    assert b"SEKRET-01-a" not in (tmp_path / "t.parquet").read_bytes()
    assert secrets_in_backup(tmp_path, ["SEKRET-01-a", "SEKRET-02-b", "SEKRET-03-c"]) == [
        "SEKRET-02-b in manifest.json",
        "SEKRET-01-a in t.parquet",
    ]


# -- batches bounded by bytes, not rows (the wide shape of `make bench`) ---------------------------
# Not matrix cells: they run in the fast tier. A batch of 16,384 (restore) or 65,536 (SQLite
# backup) rows is 64 MB or 256 MB of Arrow memory once rows are 4 KB wide (rendered template
# fields, XCom values); these keep every batch near database.BATCH_BYTES whatever the row width.

WIDE_ROWS, WIDE_VALUE = 6_000, 4_000


def _wide_log_rows(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO log (dttm, event, owner, extra) VALUES ('2026-01-01 00:00:00', 'running', 'airflow', ?)",
            [(f"{i:06d}" + "w" * WIDE_VALUE,) for i in range(WIDE_ROWS)],
        )


def test_sqlite_backup_reads_wide_rows_in_byte_bounded_batches(templates: Any, tmp_path: Path) -> None:
    from mwaa_control.metadata.database import BATCH_BYTES

    path = tmp_path / "wide.db"
    path.write_bytes(templates.v211.read_bytes())
    _wide_log_rows(path)
    database = open_database(f"sqlite:///{path}")
    log = database.reflect().tables["log"]
    with database.snapshot() as reader:
        sizes = [(b.num_rows, b.nbytes) for b in reader.batches(log)]
    assert sum(rows for rows, _ in sizes) == WIDE_ROWS
    assert len(sizes) > 1 and max(size for _, size in sizes) <= 2 * BATCH_BYTES, sizes


class _RecordingDatabase:
    """A Database whose writer records the size of every batch the restore inserts."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.dialect = inner, inner.dialect
        self.batches: list[tuple[str, int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def transaction(self) -> Any:
        from contextlib import contextmanager

        outer = self

        class Writer:
            def __init__(self, writer: Any) -> None:
                self.writer = writer

            def __getattr__(self, name: str) -> Any:
                return getattr(self.writer, name)

            def insert(self, table: Any, columns: list[str], batches: Iterator[Any]) -> None:
                def recorded() -> Iterator[Any]:
                    for batch in batches:
                        outer.batches.append((table.name, batch.num_rows, batch.nbytes))
                        yield batch

                self.writer.insert(table, columns, recorded())

        @contextmanager
        def transaction() -> Iterator[Any]:
            with outer.inner.transaction() as writer:
                yield Writer(writer)

        return transaction()


def test_restore_reads_wide_rows_in_byte_bounded_batches(templates: Any, tmp_path: Path, kms: Any) -> None:
    from mwaa_control.metadata.database import BATCH_BYTES

    source, target = tmp_path / "source.db", tmp_path / "target.db"
    source.write_bytes(templates.v211.read_bytes())
    target.write_bytes(templates.v211.read_bytes())
    _wide_log_rows(source)
    store = LocalStore(tmp_path / "store")
    keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
    fernet = "bTzK3n0zvbV6Tvb0gYVw0zHyGj1sSgqGmFQm3nK0qzs="
    manifest = BackupEngine(open_database(f"sqlite:///{source}"), store).backup(
        BackupRequest(environment=ENVIRONMENT, keys=keys, source_fernet_key=fernet)
    )
    recording = _RecordingDatabase(open_database(f"sqlite:///{target}"))
    report = RestoreEngine(recording, store).restore(RestoreRequest(ENVIRONMENT, manifest.backup_id, keys, fernet))
    assert {t.table: t.inserted for t in report.tables}["log"] == WIDE_ROWS
    logs = [(rows, size) for table, rows, size in recording.batches if table == "log"]
    assert sum(rows for rows, _ in logs) == WIDE_ROWS
    assert len(logs) > 1 and max(size for _, size in logs) <= 2 * BATCH_BYTES, logs

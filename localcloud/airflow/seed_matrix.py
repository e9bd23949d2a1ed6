"""Seeds for the release matrix (tests/metadata/test_matrix.py): every Airflow release MWAA offers,
2.7 to 3.3, where seed_metadata.py seeds 2.9 to 2.11 only.

Two halves. In the test process: `seed_source(backend)` fills a freshly migrated database with hostile
data, `prepare_target(backend)` makes a restore target that already holds rows. Each runs this file
INSIDE the release's virtualenv (`<venv>/bin/python seed_matrix.py source|target`), as
`AirflowBackend.seed_metadata()` runs seed_metadata.py:

- Airflow 2 sources: seed_metadata.py itself, with two guards for releases before 2.9 applied from
  here (`patch_airflow_before_2_9`), seed_metadata.py unchanged.
- Airflow 3 sources: seed_metadata.py refuses 3.x (no `dag.test()` without the execution API server,
  datasets renamed assets, pickled confs now JSON), so `Airflow3Seeder` below writes what the
  database path of a 3.x backup must carry: encrypted variables and connections with `SEKRET-`
  markers, pools, DAGs parsed by the real DAG processor (assets, a mapped task, a broken file), runs
  triggered through Airflow's own `trigger_dag` with hostile confs and the control plane's callback
  block (a plaintext task token), finished task instances, XComs and audit-log rows that carry
  plaintext secrets.
- Targets (both lines): the DAG processor run once over a DAG folder with datasets/assets, then a
  pool and an encrypted connection that the backup also holds (with other values), and one that it
  does not. It prints the marker of the target's own connection password.

Prints one JSON line on stdout (the last line), like seed_metadata.py."""

# Runs inside an Airflow virtualenv: Airflow is imported only once its configuration is set.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcloud.airflow.backend import AirflowBackend

HERE = Path(__file__).resolve().parent
HOSTILE_TEXT = "naïve ☃ 日本 \"double\" 'single', comma; semi\nsecond line\r\n\ttab \\ backslash 🚀"
# The target's pre-existing configuration; the backup holds a pool and a connection of the same names.
TARGET_POOL = ("etl_pool", 2, "the target's own, smaller pool")
TARGET_ONLY_POOL = ("target_only_pool", 3, "only in the target")
TARGET_CONNECTION = "seed_postgres"
TARGET_ONLY_CONNECTION = "target_only_conn"
TARGET_PASSWORD_MARKER = "TARGET-ONLY-password-Zq31337"  # noqa: S105 - a marker, not a secret

# Airflow 3 DAG files (the Task SDK's names): assets, a mapped task, a deferral-free run shape.
DAG_FILES_3: dict[str, str] = {
    "seed_etl.py": '''
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(
    "seed_etl",
    start_date=datetime(2024, 1, 1),
    schedule="@daily",
    catchup=False,
    tags=["seed", "etl", "naïve ☃"],
    description="Extract, a mapped transform, load: unicode ☃ 日本",
    doc_md="""# ETL\\n\\nMulti-line *markdown* with "quotes", commas, and ☃.""",
    default_args={"owner": "data-team", "pool": "etl_pool"},
):

    @task
    def extract():
        return {"rows": [1, 2, 3]}

    @task
    def transform(partition: str):
        return partition

    @task
    def load(rows, parts):
        return len(rows)

    load(extract(), transform.expand(partition=["2024-01", "2024-02"]))
''',
    "seed_assets.py": """
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

RAW = Asset("s3://seed-bucket/raw/events.parquet", extra={"owner": "naïve ☃", "format": "parquet"})
CLEAN = Asset("s3://seed-bucket/clean/events,v2.parquet")

with DAG("seed_producer", start_date=datetime(2024, 1, 1), schedule="@hourly", catchup=False, tags=["seed"]):

    @task(outlets=[RAW, CLEAN])
    def publish():
        return "published ☃"

    publish()

with DAG("seed_consumer", start_date=datetime(2024, 1, 1), schedule=[RAW], catchup=False, tags=["seed"]):

    @task
    def consume():
        return "consumed"

    consume()
""",
    "seed_legacy.py": """
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("seed.legacy-report_v1", start_date=datetime(2023, 1, 1), schedule="@weekly", catchup=False):
    EmptyOperator(task_id="start") >> EmptyOperator(task_id="end")
""",
    "seed_broken.py": """
raise RuntimeError("naïve ☃ broken DAG file:\\nsecond line, with \\"quotes\\"")
""",
}


def write_dag_files(dags_folder: Path, major: int) -> None:
    """The seed's DAG files for this Airflow line (seed_metadata.py's on Airflow 2)."""
    if major == 2:
        from localcloud.airflow.seed_metadata import write_dag_files as write_2

        write_2(dags_folder)
        return
    dags_folder.mkdir(parents=True, exist_ok=True)
    for name, source in DAG_FILES_3.items():
        (dags_folder / name).write_text(textwrap.dedent(source).lstrip())


# --- in the test process ---------------------------------------------------------------------------


def _run_in_venv(backend: AirflowBackend, mode: str, timeout: float) -> dict[str, Any]:
    import subprocess

    done = subprocess.run(  # noqa: S603 - argv list, no shell
        [str(backend.venv / "bin" / "python"), str(Path(__file__).resolve()), mode],
        capture_output=True,
        text=True,
        env=backend.environment(),
        timeout=timeout,
        check=False,
        cwd=backend.home,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"seed_matrix {mode} on Airflow {backend.release} failed ({done.returncode}):\n"
            f"{done.stderr[-4000:]}\n{done.stdout[-1000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def seed_source(backend: AirflowBackend, timeout: float = 900) -> dict[str, Any]:
    """A migrated source database full of hostile data; what was seeded (seed_metadata.py's report)."""
    backend.ensure_ready()
    backend.dags_folder.mkdir(parents=True, exist_ok=True)
    if backend.major == 2:
        return _run_in_venv(backend, "source", timeout)
    write_dag_files(backend.dags_folder, 3)
    parsed = backend.parse_dags()
    if parsed.returncode != 0:
        raise RuntimeError(f"the DAG processor of Airflow {backend.release} failed: {parsed.stderr[-3000:]}")
    return _run_in_venv(backend, "source", timeout)


def prepare_target(backend: AirflowBackend, timeout: float = 600) -> dict[str, Any]:
    """A migrated target that already holds rows: its DAG folder parsed once (Airflow 3: the DAG
    processor; Airflow 2: what its DAG processor does, in the same process as the rest, as one
    `scheduler --num-runs 1` exits before parsing), a pool and an encrypted connection of the names
    the backup holds (other values), and one of each it does not."""
    backend.ensure_ready()
    write_dag_files(backend.dags_folder, backend.major)
    if backend.major >= 3:
        parsed = backend.parse_dags()
        if parsed.returncode != 0:
            raise RuntimeError(f"the DAG processor of Airflow {backend.release} failed: {parsed.stderr[-3000:]}")
    return _run_in_venv(backend, "target", timeout)


# --- inside the virtualenv ------------------------------------------------------------------------


def _table_counts(session: Any) -> tuple[dict[str, int], str]:
    import sqlalchemy as sa

    bind = session.get_bind()
    tables = sorted(t for t in sa.inspect(bind).get_table_names() if not t.startswith("sqlite_"))
    counts = {t: session.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one() for t in tables}
    revision = session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    return counts, str(revision)


def _add_pool(name: str, slots: int, description: str) -> None:
    from airflow.models import Pool

    Pool.create_or_update_pool(name, slots, description, include_deferred=False)


def patch_airflow_before_2_9() -> None:
    """What seed_metadata.py (written against 2.9+) needs on 2.7 and 2.8, and nothing else:

    - 2.7's import-error model has no `processor_subdir` column (2.8 added it): the seed's keyword
      is dropped for that class only;
    - before 2.9 Airflow stores a trigger's kwargs as plain JSON (no `encrypted_kwargs`, no Fernet):
      the seed's "Airflow encrypted the trigger's kwargs" check cannot hold, so the attribute it
      reads is empty. The secret in those kwargs is then in the source database in plaintext, and
      the backup must still seal it (the catalog detects plain JSON kwargs per value); the matrix
      scans every backup for every marker."""
    from airflow.models import errors
    from airflow.models.trigger import Trigger

    model = getattr(errors, "ParseImportError", None) or errors.ImportError
    if "processor_subdir" not in model.__table__.columns:
        # Wrapped around SQLAlchemy's instrumented constructor, so the class stays what Airflow's
        # web server and schemas expect.
        instrumented = model.__init__

        def without_subdir(self: Any, **kwargs: Any) -> None:
            kwargs.pop("processor_subdir", None)
            instrumented(self, **kwargs)

        model.__init__ = without_subdir
    if not hasattr(Trigger, "encrypted_kwargs"):
        Trigger.encrypted_kwargs = ""


def parse_dags_2() -> None:
    """Airflow 2's DAG file processing: a DagBag synced to the database (DAGs, serialised DAGs, their
    datasets and tags) and the import errors recorded."""
    from airflow.configuration import conf
    from airflow.models import DagBag, errors
    from airflow.utils import timezone
    from airflow.utils.session import create_session

    folder = conf.get("core", "dags_folder")
    dagbag = DagBag(dag_folder=folder, include_examples=False, safe_mode=True)
    if not dagbag.dags:
        raise RuntimeError(f"no DAG parsed in {folder}: {dagbag.import_errors}")
    dagbag.sync_to_db()
    model = getattr(errors, "ParseImportError", None) or errors.ImportError
    with create_session() as session:
        for filename, stacktrace in dagbag.import_errors.items():
            session.add(model(filename=filename, timestamp=timezone.utcnow(), stacktrace=stacktrace))


def seed_target() -> dict[str, Any]:
    import airflow
    from airflow.models import Connection
    from airflow.utils.session import create_session

    if airflow.__version__.startswith("2."):
        parse_dags_2()
    for name, slots, description in (TARGET_POOL, TARGET_ONLY_POOL):
        _add_pool(name, slots, description)
    with create_session() as session:
        for conn_id in (TARGET_CONNECTION, TARGET_ONLY_CONNECTION):
            session.add(
                Connection(
                    conn_id=conn_id,
                    conn_type="postgres",
                    host="target.internal",
                    login="target",
                    password=f"{TARGET_PASSWORD_MARKER} {conn_id}",
                    extra=json.dumps({"sslmode": "disable", "note": "the target's own"}),
                )
            )
        session.commit()
        stored = session.query(Connection).filter(Connection.conn_id == TARGET_ONLY_CONNECTION).one()
        if not stored.is_encrypted or TARGET_PASSWORD_MARKER in stored._password:
            raise RuntimeError("the target's connection password is not stored encrypted")
        counts, revision = _table_counts(session)
    return {"table_counts": counts, "alembic_revision": revision, "password_marker": TARGET_PASSWORD_MARKER}


class Airflow3Seeder:
    """Airflow 3's half of seed_metadata.py: what a 3.x database holds after real use, made through
    Airflow's models and its own `trigger_dag` (runs need no scheduler or execution API server)."""

    def __init__(self) -> None:
        self.markers: list[str] = []
        self.plaintext: list[str] = []

    def secret(self, n: int, what: str, *, airflow_encrypts: bool = True) -> str:
        marker = f"SEKRET-{n:02d}-{what}-Zq{n * 7919 % 10007:05d}"
        (self.markers if airflow_encrypts else self.plaintext).append(marker)
        return marker

    def seed_secrets(self) -> None:
        from airflow.models import Connection, Variable
        from airflow.utils.session import create_session

        Variable.set("seed_plain", f"plain value {self.secret(1, 'var-plain')}")
        Variable.set(
            "seed_json",
            {"user": "naïve ☃", "token": self.secret(2, "var-json"), "nested": {"list": [1, "two", None]}},
            serialize_json=True,
            description="Multi-line JSON value,\nwith a description ☃",
        )
        Variable.set("seed_ключ_☃", f"{HOSTILE_TEXT} {self.secret(3, 'var-unicode-key')}")
        big = "".join(f"line {i:05d} ☃ {'x' * 80}\n" for i in range(1200))
        Variable.set("seed_large", big[:60_000] + self.secret(4, "var-large") + big[60_000:])
        with create_session() as session:
            session.add(
                Connection(
                    conn_id="seed_postgres",
                    conn_type="postgres",
                    description='Warehouse ☃,\nmulti-line "description"',
                    host="warehouse.example.com",
                    schema="analytics",
                    login="reporter",
                    password=f"p@ss:w/rd 日本 {self.secret(8, 'conn-password')}",
                    port=5432,
                    extra=json.dumps({"sslmode": "require", "options": "-c x " + self.secret(9, "conn-extra")}),
                )
            )
            session.add(
                Connection(
                    conn_id="seed_http",
                    conn_type="http",
                    host="partner.example.com",
                    password=f"naïve ☃ {self.secret(10, 'conn-password-unicode')}",
                    extra=json.dumps({"headers": {"X-Api-Key": self.secret(11, "conn-extra-json")}}, indent=2),
                )
            )
            session.commit()
        _add_pool("etl_pool", 4, 'ETL tasks,\n"limited" ☃')
        _add_pool("naïve ☃ 日本 pool", 1, "Unicode name")

    def seed_runs(self) -> list[str]:
        """Runs as a user, the API and the control plane trigger them; finished ones marked as the
        scheduler leaves them, with XComs and audit-log rows."""
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.models import DagModel, DagRun, Log, TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.types import DagRunTriggeredByType

        token = self.secret(20, "task-token", airflow_encrypts=False)
        second = self.secret(21, "task-token-2", airflow_encrypts=False)
        confs: list[tuple[str, datetime, dict[str, Any]]] = [
            ("seed_etl", datetime(2024, 3, 10, tzinfo=UTC), {"text": HOSTILE_TEXT, "nested": {"a": [1, None]}}),
            (
                "seed.legacy-report_v1",
                datetime(2024, 1, 22, tzinfo=UTC),
                {"mwaa_control": {"task_token": f"AQCEAAAAKgAAAAMAAAAA{token}", "region": "us-east-1"}},
            ),
            (
                "seed.legacy-report_v1",
                datetime(2024, 1, 29, tzinfo=UTC),
                {
                    "mwaa_control": {
                        "callback_id": "cb-0001",
                        "table": "mwaa-control-callbacks",
                        "region": "us-east-1",
                        "task_token": f"AQCEAAAAKgAAAAMAAAAB{second}",
                    },
                    "report": "naïve ☃",
                },
            ),
            ("seed_producer", datetime(2024, 3, 1, tzinfo=UTC), {}),
            ("seed_consumer", datetime(2024, 3, 1, 1, tzinfo=UTC), {}),
        ]
        run_ids = []
        with create_session() as session:
            for dag_id in ("seed_etl", "seed_producer", "seed_consumer"):
                model = session.get(DagModel, dag_id)
                if model is None:
                    raise RuntimeError(f"{dag_id} was not parsed by the DAG processor")
                model.is_paused = False
        for n, (dag_id, logical, conf) in enumerate(confs):
            run = trigger_dag(
                dag_id,
                triggered_by=DagRunTriggeredByType.CLI,
                run_id=f"manual__seed_{n}",
                conf=conf,
                logical_date=logical,
            )
            if run is None:
                raise RuntimeError(f"{dag_id} was not triggered")
            run_ids.append(run.run_id)
        with create_session() as session:
            runs = session.query(DagRun).order_by(DagRun.dag_id, DagRun.run_id).all()
            for index, dag_run in enumerate(runs):
                start = (dag_run.logical_date or datetime(2024, 1, 1, tzinfo=UTC)) + timedelta(minutes=5)
                running = dag_run.run_id == "manual__seed_0"  # one run left running
                dag_run.state = "running" if running else ("failed" if index % 3 == 2 else "success")
                dag_run.start_date = start
                dag_run.end_date = None if running else start + timedelta(seconds=30 + 7 * index)
                for position, ti in enumerate(
                    session.query(TaskInstance).filter(
                        TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
                    )
                ):
                    ti.state = "running" if running else dag_run.state
                    ti.start_date = start + timedelta(seconds=5 * position)
                    ti.end_date = None if running else ti.start_date + timedelta(seconds=4)
                    ti.try_number = 1
            session.commit()
            self._xcoms(session, runs)
            api_secret = self.secret(23, "api-trigger-conf", airflow_encrypts=False)
            form = {"api_key": self.secret(22, "trigger-form-conf", airflow_encrypts=False)}
            session.add(
                Log(
                    event="trigger",
                    dag_id="seed_etl",
                    owner="admin",
                    extra=json.dumps({"run_id": "", "conf": json.dumps(form, indent=4), "unpause": "on"}),
                )
            )
            session.add(
                Log(
                    event="api.post_dag_run",
                    dag_id="seed_etl",
                    owner="admin",
                    extra=json.dumps({"conf": {"p": api_secret}}),
                )
            )
            session.add(Log(event="cli_trigger", dag_id="seed_etl", owner="naïve ☃", extra=HOSTILE_TEXT))
            session.commit()
        return run_ids

    @staticmethod
    def _xcoms(session: Any, runs: list[Any]) -> None:
        """XComs as the execution API stores them (JSON values, a unicode key, a large value)."""
        from airflow.models import TaskInstance

        try:
            from airflow.models.xcom import XComModel
        except ImportError:  # pragma: no cover - every 3.x release has it
            return
        for dag_run in runs:
            if dag_run.state != "success":
                continue
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            ):
                for key, value in (
                    ("return_value", {"rows": [1, 2], "text": HOSTILE_TEXT}),
                    ("naïve ☃ 日本", [{"i": i, "pad": "ü" * 40} for i in range(300)]),
                ):
                    XComModel.set(
                        key=key,
                        value=value,
                        dag_id=ti.dag_id,
                        task_id=ti.task_id,
                        run_id=ti.run_id,
                        map_index=ti.map_index,
                        session=session,
                    )
        session.commit()

    def run(self) -> dict[str, Any]:
        import airflow
        from airflow.utils.session import create_session

        self.seed_secrets()
        run_ids = self.seed_runs()
        with create_session() as session:
            counts, revision = _table_counts(session)
        return {
            "airflow_version": airflow.__version__,
            "alembic_revision": revision,
            "secret_markers": self.markers,
            "plaintext_secret_markers": self.plaintext,
            "table_counts": counts,
            "run_ids": run_ids,
        }


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("source", "target"):
        raise SystemExit("usage: seed_matrix.py source|target")
    warnings.simplefilter("ignore")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    real_stdout = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sink = os.dup(2) if os.environ.get("MWAA_SEED_VERBOSE") == "1" else os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    started = time.monotonic()
    import airflow

    if mode == "target":
        result = seed_target()
    elif airflow.__version__.startswith("2."):
        os.dup2(real_stdout.fileno(), 1)  # seed_metadata.main() silences Airflow itself
        sys.path.insert(0, str(HERE))
        import seed_metadata

        patch_airflow_before_2_9()
        seed_metadata.main()
        return
    else:
        result = Airflow3Seeder().run()
    result["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.flush()
    real_stdout.write(json.dumps(result, ensure_ascii=False, sort_keys=True) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()

"""One real Airflow installation per emulated environment: its own AIRFLOW_HOME, SQLite metadata
database and DAG folder, run from a separate virtualenv per Airflow major version (installed by
`make airflow-venvs`), so the tests see real Airflow output for the 2.x and 3.x lines MWAA offers.

Speed-ups that change nothing Airflow does, for runs of many environments at once (the fleet
bench). They are on only with MWAA_CONTROL_FAST_AIRFLOW=1 (`fast()`); the tests run without them:
- A new SQLite database is a copy of one `airflow db migrate` made once per release and process (the
  migration is the same for every home: 5-20 s of CPU saved per environment generation); each home
  still gets its own file, its own Fernet key and its own generated airflow.cfg (`_copy_migrated`).
- Airflow processes write and reuse compiled bytecode in a directory of this process's own
  (PYTHONPYCACHEPREFIX), even where the environment forbids writing it next to the sources
  (PYTHONDONTWRITEBYTECODE): each would otherwise compile Airflow again (a REST call 6.9 -> 3.8 s).
- At most PROCESS_SLOTS one-shot Airflow processes run at once; the others queue."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import zipfile
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.fernet import Fernet

from localcloud.airflow.scheduler import DagRunScheduler

ROOT = Path(__file__).resolve().parent.parent.parent
RUNNER = Path(__file__).resolve().parent / "runner.py"
SEEDER = Path(__file__).resolve().parent / "seed_metadata.py"
VENVS_DIR = Path(os.environ.get("MWAA_CONTROL_AIRFLOW_VENVS", ROOT / ".airflow"))
# The Airflow release installed locally for each major line MWAA offers.
LOCAL_RELEASES = {2: "2.11.0", 3: "3.0.6"}
# Older releases MWAA still offers, installed too (metadata backup/restore is tested against them).
OLDER_RELEASES = ("2.9.2",)


class AirflowNotInstalled(RuntimeError):
    pass


# What `airflow db migrate` leaves in a new SQLite database besides the schema: the log template, the
# default pool and the schema version. A migrated database holding anything else (a connection or a
# variable, encrypted under the migration's Fernet key) is never copied: each home migrates its own.
_MIGRATION_ROWS = frozenset({"alembic_version", "log_template", "slot_pool", "sqlite_sequence"})
# airflow.cfg values Airflow draws at random when it writes the file (the web server's secret key,
# which the internal API shares, and Airflow 3's JWT secret): drawn again for each copy.
_SECRET_KEY_LINE = re.compile(r"^(secret_key|internal_api_secret_key) = .*$", re.MULTILINE)
_JWT_SECRET_LINE = re.compile(r"^jwt_secret = .*$", re.MULTILINE)


_SCRATCH: list[Path] = []
_SCRATCH_LOCK = threading.Lock()


def _scratch() -> Path:
    """A directory of this process's own for caches that outlive one environment (removed at exit)."""
    with _SCRATCH_LOCK:
        if not _SCRATCH:
            _SCRATCH.append(Path(tempfile.mkdtemp(prefix="airflow-backends-")))
            atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
        return _SCRATCH[0]


class _MigratedTemplates:
    """One freshly migrated SQLite home per (release, virtualenv), made on first need in a directory
    of this process's own (removed at exit); None for a release whose migration leaves data behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._release_locks: dict[Path, threading.Lock] = {}
        self._homes: dict[Path, Path | None] = {}

    def home_for(self, backend: AirflowBackend) -> Path | None:
        with self._lock:
            lock = self._release_locks.setdefault(backend.venv, threading.Lock())
        with lock:  # one migration per release, however many environments ask at once
            if backend.venv not in self._homes:
                self._homes[backend.venv] = self._migrate(backend)
            return self._homes[backend.venv]

    def _migrate(self, backend: AirflowBackend) -> Path | None:
        with self._lock:
            home = _scratch() / "migrated" / f"{backend.release}-{len(self._homes)}"
        home.mkdir(parents=True)
        (home / "webserver_config.py").write_text((backend.home / "webserver_config.py").read_text())
        env = backend.environment()
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
                "PYTHONPATH": str(home / "plugins"),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            }
        )
        with _PROCESS_SLOTS:
            done = subprocess.run(  # noqa: S603 - argv list, no shell
                [str(backend.venv / "bin" / "airflow"), "db", "migrate"],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=False,
                cwd=home,
            )
        if done.returncode != 0 or not (home / "airflow.cfg").is_file():
            return None  # each home migrates itself and reports its own failure
        with sqlite3.connect(home / "airflow.db") as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            filled = {t for t in tables if db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()}  # noqa: S608
        db.close()
        return home if filled <= _MIGRATION_ROWS else None


_MIGRATED = _MigratedTemplates()
# One-shot Airflow processes (CLI, REST, DAG parsing, migrations, seeding) running at once in this
# process, over all environments: each starts by importing Airflow (~5 s of CPU, ~150 MB), so many
# at once only share the CPUs more slowly (and may reach their timeouts); the others queue. The
# long-lived task runners (scheduler.py) are not counted.
PROCESS_SLOTS = int(os.environ.get("MWAA_CONTROL_AIRFLOW_PROCESSES", str(max(2, os.cpu_count() or 2))))
_PROCESS_SLOTS = threading.BoundedSemaphore(PROCESS_SLOTS)


def fast() -> bool:
    """Whether the speed-ups above are on (read on each use: the bench sets it before it starts)."""
    return os.environ.get("MWAA_CONTROL_FAST_AIRFLOW") == "1"


def venv_for(major: int) -> Path:
    return venv_for_release(LOCAL_RELEASES[major])


def local_release(version: str) -> str:
    """The release an environment of MWAA version `version` runs here: exactly that release when
    `.airflow/<version>` is installed, else the local release of its major line (LOCAL_RELEASES)."""
    if (VENVS_DIR / version / "bin" / "airflow").exists():
        return version
    return LOCAL_RELEASES[int(version.split(".", maxsplit=1)[0])]


def _distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(release: str) -> set[str]:
    """Normalised names (PEP 503) of the distributions installed in a release's virtualenv."""
    names: set[str] = set()
    for info in (venv_for_release(release) / "lib").glob("python*/site-packages/*.dist-info"):
        names.add(_distribution_name(info.name.removesuffix(".dist-info").rsplit("-", maxsplit=1)[0]))
    return names


def unsatisfied_requirements(requirements: str, release: str) -> list[str]:
    """The names in a requirements.txt that the release's virtualenv does not have installed.

    A name check only: version specifiers, extras and markers are ignored, and option lines
    (`-c constraints`, `--index-url`, ...) skipped; MWAA would run pip, which could also fail on a
    version conflict or a package missing from the index."""
    installed = installed_distributions(release)
    missing = []
    for raw in requirements.splitlines():
        line = raw.split("#", maxsplit=1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match is None or _distribution_name(match.group(0)) not in installed:
            missing.append(match.group(0) if match else line)
    return missing


def venv_for_release(release: str) -> Path:
    """The virtualenv of one exact Airflow release, e.g. "2.9.2" (see AIRFLOW_RELEASES in the Makefile)."""
    venv = VENVS_DIR / release
    if not (venv / "bin" / "airflow").exists():
        raise AirflowNotInstalled(f"Airflow {release} is not installed in {venv}; run `make airflow-venvs`")
    return venv


@dataclass
class Completed:
    stdout: str
    stderr: str
    returncode: int


class AirflowBackend:
    """`major` picks the local release of that line (LOCAL_RELEASES); `release` an exact one.
    `db_url` is a SQLAlchemy URL for the metadata database instead of SQLite under `home`.

    Every Airflow process gets `extra_env` on top of its Airflow settings (the MWAA emulator puts
    the moto server's `AWS_ENDPOINT_URL`, region and dummy credentials there), and the home's
    plugins folder on PYTHONPATH, as MWAA does with plugins.zip. `before_use`, when set, runs
    once per `ensure_ready()` after the database exists, under the backend's lock (the emulator
    provisions DAGs and plugins from S3 there); it must not call `ensure_ready()` itself."""

    def __init__(
        self, home: Path, major: int | None = None, *, release: str | None = None, db_url: str | None = None
    ) -> None:
        if release is None:
            if major is None:
                raise ValueError("AirflowBackend needs an Airflow major version or an exact release")
            release = LOCAL_RELEASES[major]
        if major is not None and int(release.split(".")[0]) != major:
            raise ValueError(f"Airflow {release} is not of the {major}.x line")
        self.home = home
        self.release = release
        self.major = int(release.split(".")[0])
        self.venv = venv_for_release(release)
        self.db_url = db_url
        self.dags_folder = home / "dags"
        self.plugins_folder = home / "plugins"
        self.fernet_key = Fernet.generate_key().decode()
        self.extra_env: dict[str, str] = {}
        self.before_use: Callable[[AirflowBackend], None] | None = None
        self._ready = False
        self._closed = False
        self._runner_started = False
        self._lock = threading.RLock()
        self.scheduler = DagRunScheduler(self.venv / "bin" / "python", self.environment, home)

    @property
    def database_url(self) -> str:
        """The metadata database's SQLAlchemy URL as Airflow uses it (psycopg2 for PostgreSQL)."""
        return self.db_url or f"sqlite:///{self.home / 'airflow.db'}"

    def host_database_url(self) -> str:
        """The same database for this project's own process, which has psycopg 3, not psycopg2."""
        return self.database_url.replace("postgresql+psycopg2://", "postgresql+psycopg://")

    def environment(self) -> dict[str, str]:
        dropped = ("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH") + (("PYTHONDONTWRITEBYTECODE",) if fast() else ())
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        if fast():
            env["PYTHONPYCACHEPREFIX"] = str(_scratch() / "pycache")
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                # REST API callers are authorised by MWAA (IAM); inside, they act as Admin.
                "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.default",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API_AUTH__JWT_SECRET": "mwaa-emulator-local-only",
                "AIRFLOW__API_AUTH__JWT_ISSUER": "mwaa-emulator",
                "PYTHONWARNINGS": "ignore",
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
                "PYTHONPATH": str(self.plugins_folder),
                **self.extra_env,
            }
        )
        return env

    def ensure_ready(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the Airflow of {self.home.name} was deleted with its environment")
            if not self._ready:
                self.dags_folder.mkdir(parents=True, exist_ok=True)
                self.plugins_folder.mkdir(parents=True, exist_ok=True)
                (self.home / "webserver_config.py").write_text('AUTH_ROLE_PUBLIC = "Admin"\n')
                template = _MIGRATED.home_for(self) if self.db_url is None and fast() else None
                if template is not None:
                    self._copy_migrated(template)
                else:
                    result = self._run([str(self.venv / "bin" / "airflow"), "db", "migrate"], timeout=300)
                    if result.returncode != 0:
                        raise RuntimeError(f"airflow db migrate failed: {result.stderr[-2000:]}")
                self._ready = True
            if self.before_use is not None:
                self.before_use(self)

    def _copy_migrated(self, template: Path) -> None:
        """What `airflow db migrate` would leave in this home, from a migrated template: a copy of the
        database (stamped now, as a migration of its own would be) and airflow.cfg with this home's
        paths and newly drawn secrets. The Fernet key is this backend's own (it was never written)."""
        shutil.copyfile(template / "airflow.db", self.home / "airflow.db")
        with sqlite3.connect(self.home / "airflow.db") as db:
            db.execute("UPDATE log_template SET created_at = strftime('%Y-%m-%d %H:%M:%f000', 'now')")
        db.close()
        config = (template / "airflow.cfg").read_text().replace(str(template), str(self.home))
        secret = b64encode(secrets.token_bytes(16)).decode()
        config = _SECRET_KEY_LINE.sub(lambda line: f"{line.group(1)} = {secret}", config)
        config = _JWT_SECRET_LINE.sub(lambda _: f"jwt_secret = {b64encode(secrets.token_bytes(16)).decode()}", config)
        (self.home / "airflow.cfg").write_text(config)
        os.chmod(self.home / "airflow.cfg", 0o600)  # as Airflow writes it (group and others: no access)
        (self.home / "logs").mkdir(exist_ok=True)

    def install_plugins(self, archive: bytes) -> list[str]:
        """Unzips a plugins.zip into the plugins folder (on PYTHONPATH); returns the files written."""
        written = []
        with zipfile.ZipFile(BytesIO(archive)) as plugins:
            for member in plugins.infolist():
                if member.is_dir():
                    continue
                target = self._inside(self.plugins_folder, member.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(plugins.read(member))
                written.append(member.filename)
        return written

    def write_dags(self, files: dict[str, bytes]) -> None:
        """Writes DAG files (paths relative to the DAG folder), as MWAA's sync from DagS3Path does."""
        for relative, content in files.items():
            target = self._inside(self.dags_folder, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    @staticmethod
    def _inside(folder: Path, relative: str) -> Path:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise ValueError(f"refusing to write {relative!r} outside {folder}")
        return folder.joinpath(*parts)

    def schedule_runs(self) -> None:
        """Let the scheduler stand-in execute queued runs of unpaused DAGs, in the background."""
        with self._lock:  # never a stand-in that stop_idle_runner() is replacing
            if not self._closed:
                self._runner_started = True
                self.scheduler.poke()

    def stop_idle_runner(self) -> bool:
        """Stops the scheduler stand-in's process when no run is queued or executing, and returns
        whether it did: an idle environment otherwise keeps an Airflow process (~250 MB) for its
        lifetime. The next `schedule_runs()` starts a new one; runs executed so far stay listed.
        Never waits: a backend another thread is using (its lock held) is not idle."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or not self._runner_started or not self.scheduler.wait_idle(0):
                return False
            self._runner_started = False
            idle = self.scheduler
            self.scheduler = DagRunScheduler(self.venv / "bin" / "python", self.environment, self.home)
            self.scheduler.executed, self.scheduler.errors = idle.executed, idle.errors
        finally:
            self._lock.release()
        idle.close()
        return True

    def wait_for_runs(self, timeout: float = 300) -> list[dict[str, Any]]:
        """Blocks until no run is queued for execution or executing; returns every run executed so far
        ({"dag_id", "run_id", "state"}). Raises TimeoutError, or RuntimeError if the runner failed."""
        if not self.scheduler.wait_idle(timeout):
            raise TimeoutError(f"DAG runs of {self.home.name} still executing after {timeout} s")
        if self.scheduler.errors:
            raise RuntimeError(f"the DAG run executor failed: {self.scheduler.errors[-1]}")
        return list(self.scheduler.executed)

    def close(self, remove: bool = False) -> None:
        """Stops the runner process; with `remove`, deletes the home (database, DAGs, plugins, logs)."""
        with self._lock:
            self._closed = True
        self.scheduler.close()
        if remove:
            shutil.rmtree(self.home, ignore_errors=True)

    def _run(self, argv: list[str], timeout: float) -> Completed:
        with _PROCESS_SLOTS if fast() else contextlib.nullcontext():  # a slot's wait is not in the timeout
            done = subprocess.run(  # noqa: S603 - argv list, no shell: values stay single arguments
                argv,
                capture_output=True,
                text=True,
                env=self.environment(),
                timeout=timeout,
                check=False,
                cwd=self.home,
            )
        return Completed(done.stdout, done.stderr, done.returncode)

    def cli(self, argv: list[str], timeout: float = 120) -> Completed:
        self.ensure_ready()
        return self._run([str(self.venv / "bin" / "airflow"), *argv], timeout)

    def rest(self, method: str, path: str, query: dict[str, str] | None, body: object) -> tuple[int, str]:
        self.ensure_ready()
        payload = json.dumps({"method": method, "path": path, "query": query or {}, "body": body})
        done = self._run([str(self.venv / "bin" / "python"), str(RUNNER), "rest", payload], timeout=120)
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("{"):
                result = json.loads(line)
                return int(result["status"]), str(result["body"])
        print(done.stderr[-3000:], file=sys.stderr)
        return 500, json.dumps({"detail": "REST runner crashed", "stderr": done.stderr[-500:]})

    def parse_dags(self) -> Completed:
        """One pass of the DAG processor, as MWAA runs after the DAG folder syncs from S3: DAGs are
        serialised and import errors recorded (`dags reserialize` records no import errors)."""
        self.ensure_ready()
        return self.run_dag_processor()

    def run_dag_processor(self) -> Completed:
        """parse_dags() without ensure_ready(), for a `before_use` hook."""
        if self.major >= 3:
            return self._run([str(self.venv / "bin" / "airflow"), "dag-processor", "--num-runs", "1"], timeout=300)
        # Airflow 2's standalone dag-processor needs extra set-up, and one scheduler loop may stop
        # before every file is processed: the runner processes each file itself.
        done = self._run([str(self.venv / "bin" / "python"), str(RUNNER), "parse"], timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"parsing the DAG folder failed: {done.stderr[-2000:]}")
        return done

    def seed_metadata(self, timeout: float = 600) -> dict[str, Any]:
        """Fills the metadata database with real DAG runs and hostile data (seed_metadata.py, run in
        this release's virtualenv) and returns what it seeded: secret markers, DAGs, row counts."""
        self.ensure_ready()
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        done = self._run([str(self.venv / "bin" / "python"), str(SEEDER)], timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(
                f"seeding Airflow {self.release} failed ({done.returncode}):\n"
                f"{done.stderr[-4000:]}\n{done.stdout[-1000:]}"
            )
        seeded: dict[str, Any] = json.loads(lines[-1])
        return seeded

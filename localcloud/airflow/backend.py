"""One real Airflow installation per emulated environment: its own AIRFLOW_HOME, SQLite metadata
database and DAG folder, run from a separate virtualenv per Airflow major version (installed by
`make airflow-venvs`), so the tests see real Airflow output for the 2.x and 3.x lines MWAA offers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
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
                result = self._run([str(self.venv / "bin" / "airflow"), "db", "migrate"], timeout=300)
                if result.returncode != 0:
                    raise RuntimeError(f"airflow db migrate failed: {result.stderr[-2000:]}")
                self._ready = True
            if self.before_use is not None:
                self.before_use(self)

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
        if not self._closed:
            self.scheduler.poke()

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

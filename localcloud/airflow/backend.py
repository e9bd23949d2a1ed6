"""One real Airflow installation per emulated environment: its own AIRFLOW_HOME, SQLite metadata
database and DAG folder, run from a separate virtualenv per Airflow major version (installed by
`make airflow-venvs`), so the tests see real Airflow output for the 2.x and 3.x lines MWAA offers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

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
    `db_url` is a SQLAlchemy URL for the metadata database instead of SQLite under `home`."""

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
        self.fernet_key = Fernet.generate_key().decode()
        self._ready = False
        self._lock = threading.Lock()

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url or f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                # REST API callers are authorised by MWAA (IAM); inside, they act as Admin.
                "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.default",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API_AUTH__JWT_SECRET": "mwaa-emulator-local-only",
                "AIRFLOW__API_AUTH__JWT_ISSUER": "mwaa-emulator",
                "PYTHONWARNINGS": "ignore",
            }
        )
        return env

    def ensure_ready(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.dags_folder.mkdir(parents=True, exist_ok=True)
            (self.home / "webserver_config.py").write_text('AUTH_ROLE_PUBLIC = "Admin"\n')
            result = self._run([str(self.venv / "bin" / "airflow"), "db", "migrate"], timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed: {result.stderr[-2000:]}")
            self._ready = True

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
        if self.major >= 3:
            return self.cli(["dag-processor", "--num-runs", "1"])
        # Airflow 2's standalone dag-processor needs extra set-up; one scheduler loop runs it.
        return self.cli(["scheduler", "--num-runs", "1"])

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

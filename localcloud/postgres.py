"""A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, a server on a free
port of 127.0.0.1 with trust authentication, one database per `create_database`, and everything
stopped and deleted on exit.

    with PostgresServer() as pg:
        url = pg.create_database("airflow")   # postgresql+psycopg2://postgres@127.0.0.1:PORT/airflow

The binaries come from the machine's PostgreSQL (`apt-get install postgresql`, which `.ci/run`
does). `initdb` refuses to run as root, so as root the server runs as the `postgres` system user
that package creates; clients (`createdb`, drivers) connect over TCP and may stay root."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

SUPERUSER = "postgres"
# The unprivileged account the Debian/Ubuntu package creates; the server runs as it under root.
SERVICE_ACCOUNT = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Durability is worthless for a cluster deleted after the tests; these make it several times faster.
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class PostgresNotInstalled(RuntimeError):
    pass


class PostgresError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `createdb`: `pg_config --bindir`, else the
    newest /usr/lib/postgresql/<major>/bin, else wherever `initdb` is on PATH."""
    candidates: list[Path] = []
    env_dir = os.environ.get("MWAA_CONTROL_PG_BINDIR")
    if env_dir:
        candidates.append(Path(env_dir))
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    versioned = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates.extend(sorted(versioned, key=lambda p: int(p.parent.name), reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "createdb")):
            return bindir
    raise PostgresNotInstalled(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; run `.ci/run` or "
        "`apt-get install -y postgresql` (the system service need not run: tests start their own cluster)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(pg_ctl: list[str], data: Path, root: Path) -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run(  # noqa: S603 - argv list
            [*pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


class PostgresServer:
    """One private cluster. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, bindir: Path | None = None, base_dir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.base_dir = base_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.root: Path | None = None
        self._finalizer: weakref.finalize[..., PostgresServer] | None = None
        self._as_service: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresNotInstalled("running as root needs `runuser` (util-linux) to start PostgreSQL")
            try:
                subprocess.run(["id", "-u", SERVICE_ACCOUNT], capture_output=True, check=True)  # noqa: S603, S607
            except (OSError, subprocess.CalledProcessError) as exc:
                raise PostgresNotInstalled(
                    f"running as root needs the `{SERVICE_ACCOUNT}` system user to own the server; "
                    "run `.ci/run` or `apt-get install -y postgresql`"
                ) from exc
            self._as_service = [runuser, "-u", SERVICE_ACCOUNT, "--"]

    # -- life cycle -----------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def start(self) -> PostgresServer:
        if self.running:
            return self
        root = Path(tempfile.mkdtemp(prefix="mwaa-pg-", dir=self.base_dir))
        self.root = root
        data, sockets = root / "data", root / "sockets"
        sockets.mkdir()
        if self._as_service:
            os.chmod(root, 0o755)  # noqa: S103 - the service account must reach its data directory
            shutil.chown(sockets, SERVICE_ACCOUNT)
            shutil.chown(root, SERVICE_ACCOUNT)
        pg_ctl = [*self._as_service, str(self.bindir / "pg_ctl")]
        self._finalizer = weakref.finalize(self, _stop, pg_ctl, data, root)
        try:
            self._service(
                "initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"
            )
            self._start_server(data, sockets)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self, data: Path, sockets: Path) -> None:
        base_conf = (data / "postgresql.conf").read_text()
        for attempt in range(5):  # a free port can be taken between choosing and binding it
            self.port = free_port()
            settings = {
                **_SETTINGS,
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{sockets}'",
            }
            (data / "postgresql.conf").write_text(
                base_conf + "\n# mwaa-control test cluster\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
            )
            log = self.root / "server.log" if self.root else data / "server.log"
            done = self._service(
                "pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "60", check=attempt == 4
            )
            if done.returncode == 0:
                return
        raise PostgresError("PostgreSQL did not start")  # pragma: no cover - check=True raised above

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    # -- commands -------------------------------------------------------------------------------

    def _service(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A server binary, as the service account when we are root."""
        argv = [*self._as_service, str(self.bindir / tool), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")  # noqa: S603
        if check and done.returncode != 0:
            log = ""
            if self.root and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise PostgresError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout[-500:]}{log}")
        return done

    def _client(self, tool: str, *args: str) -> bytes:
        """A client binary over TCP (clients may run as any user), in UTC and UTF-8."""
        if not self.running:
            raise PostgresError("the PostgreSQL server is not running")
        argv = [str(self.bindir / tool), "-h", self.host, "-p", str(self.port), "-U", self.user, *args]
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGTZ": "UTC", "PGCLIENTENCODING": "UTF8"}
        done = subprocess.run(argv, capture_output=True, check=False, env=env)  # noqa: S603
        if done.returncode != 0:
            raise PostgresError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:].decode(errors='replace')}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """Creates an empty UTF-8 database and returns its SQLAlchemy URL for psycopg2 (what Airflow 2
        uses); `url(name, driver=...)` and `dsn(name)` give the same database in other forms."""
        self._check_name(name)
        self._client("createdb", "--encoding=UTF8", "--template=template0", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._check_name(name)
        self._client("dropdb", "--if-exists", "--force", name)

    def psql(self, database: str, sql: str) -> str:
        """Runs SQL with psql and returns its unaligned, tuples-only output."""
        self._check_name(database)
        out = self._client("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql)
        return out.decode()

    def query(self, database: str, sql: str) -> list[tuple[str, ...]]:
        """The rows of one query as text (NULL reads as ""); values may hold newlines and `|`."""
        self._check_name(database)
        out = self._client(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\x1f",
            "-R",
            "\x1e",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-c",
            sql,
        ).decode()
        return [tuple(row.split("\x1f")) for row in out.removesuffix("\n").split("\x1e") if row]

    def dump(self, database: str) -> bytes:
        """`pg_dump` of one database (plain SQL), e.g. to scan for what it stores."""
        self._check_name(database)
        return self._client("pg_dump", "--no-owner", "-d", database)

    # -- addresses ------------------------------------------------------------------------------

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """`postgresql+<driver>://postgres@127.0.0.1:<port>/<database>`; driver "psycopg" is psycopg 3."""
        self._check_name(database)
        return f"postgresql+{driver}://{quote(self.user)}@{self.host}:{self.port}/{database}"

    def psycopg_url(self, database: str) -> str:
        return self.url(database, driver="psycopg")

    def dsn(self, database: str) -> str:
        """A libpq connection string (psycopg.connect, psql)."""
        self._check_name(database)
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"database names here are lower-case identifiers, not {name!r}")

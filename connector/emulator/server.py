"""The emulator as one object: :class:`Emulator` starts the HTTP server, owns the state, answers.

It composes the pure modules: one lock serialises every use of the state; request bodies are read,
parsed and validated (in worker processes when ``workers`` > 0) and injected latency is slept
outside it. The HTTP layer is :mod:`connector.emulator.httpd`.

    with Emulator(EmulatorConfig(tokens=["t"])) as emu:     # binds 127.0.0.1, a free port
        httpx.post(f"{emu.url}/api/v1.1/profiles/import_batch", json={...})
        emu.profiles(); emu.engagements(); emu.requests(); emu.stats()
        emu.order()                                         # with EmulatorConfig(order_field="seq")
        emu.set_faults(error_500_rate=0.5)
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any

import orjson

from connector.emulator.config import EmulatorConfig
from connector.emulator.faults import (
    FaultConfig,
    FaultConfigError,
    FaultDecision,
    FaultKind,
    apply_changes,
    decide,
    draw,
)
from connector.emulator.handlers import ApiRequest, handle_api, run_due_tasks
from connector.emulator.httpd import HttpServer
from connector.emulator.prepare import (
    Prepared,
    endpoint_of,
    gc_paused,
    init_worker,
    prepare,
    prepare_in_worker,
    warm_up,
)
from connector.emulator.replies import Reply, error_payload, error_reply
from connector.emulator.state import EmulatorState
from connector.emulator.views import (
    QueryError,
    engagements_view,
    order_view,
    profiles_view,
    requests_view,
    stats_view,
)

__all__ = ["Emulator", "EmulatorConfig", "FaultConfig"]

_log = logging.getLogger(__name__)

_TASK_TICK_S = 0.02
# Bodies smaller than this are parsed in the server process even when there are workers.
_WORKER_MIN_BYTES = 64 * 1024


class Emulator:
    """The Altcraft API emulator, served from background threads of this process."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = self._fresh_state()
        self._faults = self.config.faults
        self._server: HttpServer | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in background threads; returns self. ``url`` is valid from here on."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._server = HttpServer((self.config.host, self.config.port), self)
        if self.config.workers > 0:
            try:
                self._pool = self._start_workers(self.config.workers)
            except BaseException:
                self._server.server_close()
                self._server = None
                raise
        self._threads = [
            threading.Thread(target=self._server.serve_forever, args=(0.1,), name="emulator-http", daemon=True),
            threading.Thread(target=self._run_tasks, name="emulator-tasks", daemon=True),
        ]
        for t in self._threads:
            t.start()
        _log.info("Altcraft API emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the threads. Idempotent."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        connection_threads = server.close_connections()
        server.server_close()
        for t in [*self._threads, *connection_threads]:
            t.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._server = None
        self._threads = []
        _log.info("Altcraft API emulator stopped")

    def __enter__(self) -> Emulator:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash); API paths start with ``/api/v1.1/``."""
        return f"http://{self.config.host}:{self.port}"

    # --- inspection and control -------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[EmulatorState]:
        """The live state, with every request held off meanwhile (for reads the views lack)."""
        with self._lock:
            yield self._state

    @property
    def state(self) -> EmulatorState:
        """The live state; read it inside :meth:`locked` while traffic flows."""
        return self._state

    def profiles(self, email: str | None = None) -> list[dict[str, Any]]:
        """Stored profiles as ``{"profile_id", "fields"}``, optionally those with ``email``."""
        params = {"email": email} if email else {}
        return list(self._view(profiles_view, params)["profiles"])

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        """The fields of one profile, or None."""
        rows = self._view(profiles_view, {"profile_id": profile_id})["profiles"]
        return dict(rows[0]["fields"]) if rows else None

    def engagements(self, workflow_id: int | None = None, profile_id: str | None = None) -> list[dict[str, Any]]:
        """``{"workflow_id", "profile_id", "matching", "matching_value", "count", "request_ids"}``."""
        params = {}
        if workflow_id is not None:
            params["workflow_id"] = str(workflow_id)
        if profile_id is not None:
            params["profile_id"] = profile_id
        return list(self._view(engagements_view, params)["engagements"])

    def order(self, profile_id: str | None = None) -> list[dict[str, Any]]:
        """Per profile, the values of ``config.order_field`` in applied order:
        ``{"profile_id", "matching", "matching_value", "values"}``, as ``GET /_emulator/order``."""
        params = {"profile_id": profile_id} if profile_id is not None else {}
        return list(self._view(order_view, params)["profiles"])

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The request log, oldest first (see :class:`connector.emulator.state.RequestRecord`)."""
        params = {"limit": str(limit)} if limit is not None else {}
        return list(self._view(requests_view, params)["requests"])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = stats_view(self._state, self._faults, self._clock())
        return dict(orjson.loads(orjson.dumps(out)))

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def set_faults(self, **changes: object) -> FaultConfig:
        """Change faults as ``POST /_emulator/faults`` does (same keys); returns the new configuration.

        Setting ``quota_profiles`` or ``quota_requests`` restarts that quota's count.
        Raises :class:`connector.emulator.faults.FaultConfigError` listing every bad key.
        """
        with self._lock:
            now = self._clock()
            self._faults = apply_changes(self._faults, changes, now)
            if changes.get("quota_profiles") is not None or changes.get("clear") is True:
                self._state.quota_profiles_used = 0
            if changes.get("quota_requests") is not None or changes.get("clear") is True:
                self._state.quota_requests_used = 0
            return self._faults

    def clear_faults(self) -> FaultConfig:
        return self.set_faults(clear=True)

    def reset(self) -> None:
        """Forget everything: profiles, engagements, duplicates, tasks, log, counters; faults back to
        the configured ones and the random stream back to the seed."""
        with self._lock:
            in_flight = self._state.requests_in_flight
            self._state = self._fresh_state()
            self._state.requests_in_flight = self._state.requests_in_flight_max = in_flight
            self._faults = self.config.faults

    # --- the Backend the HTTP layer calls (connector.emulator.httpd.Backend) -------------------------

    @property
    def max_body_bytes(self) -> int:
        return self.config.max_body_bytes

    def request_started(self) -> None:
        with self._lock:
            self._state.request_started()

    def request_finished(self) -> None:
        with self._lock:
            self._state.request_finished()

    def decide_faults(self) -> tuple[FaultDecision, FaultConfig, float]:
        """Draw the next request's fault decision (the random stream advances once per API request)."""
        with self._lock:
            now = self._clock()
            return decide(self._faults, draw(self._state.rng), now), self._faults, now

    def inject_latency(self, seconds: float) -> None:
        self._sleep(seconds)

    def answer_api(self, req: ApiRequest, fault: FaultKind | None = None) -> Reply:
        """Execute an API request (no transport faults) and log it; ``fault``: a reset to follow."""
        prepared = self._prepare(req)
        with self._lock, gc_paused():
            return handle_api(
                self._state, self.config, self._faults, req, self._clock(), prepared=prepared, fault=fault
            )

    def record_unexecuted(
        self, path: str, request_id: str | None, body_bytes: int, reply: Reply | None, fault: FaultKind | None
    ) -> None:
        error: int | None = None
        if reply is not None:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                error = int(orjson.loads(reply.body)["error"])
        with self._lock:
            self._state.record(
                now=self._clock(),
                endpoint=endpoint_of(path) or path,
                request_id=request_id,
                items=None,
                body_bytes=body_bytes,
                http_status=0 if reply is None else reply.status,
                error=error,
                fault=fault.value if fault is not None else None,
            )

    def answer_control(self, method: str, path: str, params: Mapping[str, str], body: bytes) -> Reply:
        """The /_emulator/ endpoints: inspection, faults, reset."""
        name = path.removeprefix("/_emulator/").strip("/")
        views = {
            "profiles": profiles_view,
            "engagements": engagements_view,
            "requests": requests_view,
            "order": order_view,
        }
        try:
            if method == "GET" and name in views:
                with self._lock:
                    return Reply(200, orjson.dumps(views[name](self._state, params)))
            if method == "GET" and name == "stats":
                with self._lock:
                    return Reply(200, orjson.dumps(stats_view(self._state, self._faults, self._clock())))
            if method == "GET" and name == "health":
                return Reply(200, b'{"ok":true}')
            if name == "faults" and method in ("GET", "POST"):
                if method == "POST":
                    changes = orjson.loads(body) if body.strip() else {}
                    if not isinstance(changes, dict):
                        return error_reply(400, "a JSON object of fault settings is expected")
                    self.set_faults(**changes)
                with self._lock:
                    return Reply(200, orjson.dumps(self._faults.to_json(self._clock())))
            if method == "POST" and name == "reset":
                self.reset()
                return Reply(200, b'{"ok":true}')
        except (QueryError, FaultConfigError) as exc:
            return error_reply(400, str(exc))
        except orjson.JSONDecodeError as exc:
            return error_reply(400, f"malformed JSON: {exc}")
        return Reply(404, orjson.dumps(error_payload(404, f"no {method} {path}", text="Not found")))

    # --- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _start_workers(n: int) -> ProcessPoolExecutor:
        """Start ``n`` parse workers now rather than on the first big request."""
        pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)
        try:
            list(pool.map(warm_up, range(n * 2)))
        except BrokenProcessPool:
            pool.shutdown(wait=True, cancel_futures=True)
            raise RuntimeError(
                "the emulator's parse workers did not start: with workers > 0 the main module must "
                'guard its code with `if __name__ == "__main__":` (multiprocessing spawns them)'
            ) from None
        return pool

    def _fresh_state(self) -> EmulatorState:
        c = self.config
        return EmulatorState(
            seed=c.seed,
            dedup_window_s=c.dedup_window_s,
            answer_cache_bytes=c.answer_cache_bytes,
            request_log_size=c.request_log_size,
            order_field=c.order_field,
        )

    def _view(
        self, view: Callable[[EmulatorState, Mapping[str, str]], dict[str, Any]], params: Mapping[str, str]
    ) -> dict[str, Any]:
        # Serialised under the lock: a copy that later requests cannot change.
        with self._lock:
            data = orjson.dumps(view(self._state, params))
        return dict(orjson.loads(data))

    def _prepare(self, req: ApiRequest) -> Prepared:
        """Parse and validate the body: in a worker process when there are some and the body is big
        enough to be worth the trip, else in this thread. Either way outside the state lock."""
        pool = self._pool
        if pool is not None and len(req.body) >= _WORKER_MIN_BYTES:
            try:
                prepared = pool.submit(prepare_in_worker, req.path, req.body, req.content_type).result()
                with self._lock:
                    self._state.counters["bodies_parsed_by_workers"] += 1
                return prepared
            except BrokenProcessPool:
                _log.warning("a parse worker died; parsing in the server process from now on")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
        with gc_paused():
            return prepare(req.path, req.body, req.content_type)

    def _run_tasks(self) -> None:
        # Tasks also run when a request arrives; this covers a client that only waits.
        while not self._stopping.wait(_TASK_TICK_S):
            with self._lock:
                if self._state.tasks.pending:
                    run_due_tasks(self._state, self._faults, self._clock())

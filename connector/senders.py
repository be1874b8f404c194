"""The sender threads: each takes one batch's request to its end and hands the outcome back to the loop.

A job runs in an executor thread (:meth:`Sender.send` blocks through retries, splits and halts);
its outcome, or the exception that ended it, waits in a queue until the loop collects it. The loop
alone acts on outcomes; a sender never touches a partition.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Executor
from typing import Any

from connector.batching import Batch
from connector.models import SendOutcome
from connector.ports import Sender


class Senders:
    def __init__(self, sender: Sender, executor: Executor) -> None:
        self._sender = sender
        self._executor = executor
        self._results: queue.SimpleQueue[tuple[Batch, SendOutcome | BaseException]] = queue.SimpleQueue()
        self._cancels: dict[Batch, threading.Event] = {}

    def submit(self, batch: Batch, job: Any) -> None:
        cancel = threading.Event()
        self._cancels[batch] = cancel
        self._executor.submit(self._send, job, batch, cancel)

    def _send(self, job: Any, batch: Batch, cancel: threading.Event) -> None:
        try:
            outcome: SendOutcome | BaseException = self._sender.send(job, cancel)
        except BaseException as exc:  # handed to the loop, which decides
            outcome = exc
        self._results.put((batch, outcome))

    def results(self) -> list[tuple[Batch, SendOutcome | BaseException]]:
        """The outcomes that arrived since the last call; their batches are no longer in flight."""
        out: list[tuple[Batch, SendOutcome | BaseException]] = []
        while True:
            try:
                batch, outcome = self._results.get_nowait()
            except queue.Empty:
                return out
            self._cancels.pop(batch, None)
            out.append((batch, outcome))

    @property
    def inflight(self) -> int:
        return len(self._cancels)

    def cancel(self, batch: Batch) -> None:
        """Ask the sender of ``batch`` to give up at its next wait (it ends with ``Abandoned``)."""
        cancel = self._cancels.get(batch)
        if cancel is not None:
            cancel.set()

    def cancel_all(self) -> None:
        for cancel in self._cancels.values():
            cancel.set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._sender.close()

    def busy(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the sender threads to end; True if some are still inside a request.

        A sender blocked in an HTTP request (an API that accepts and never answers) only notices the
        stop at the request's timeout; the process must not wait for it past its drain budget.
        """
        threads = list(getattr(self._executor, "_threads", ()))
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return any(t.is_alive() for t in threads)

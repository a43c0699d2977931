"""ThreadPool: a thread pool executor fit to live inside a web process.

It differs from ``concurrent.futures.ThreadPoolExecutor`` in two ways:

* Its workers are daemon threads. ThreadPoolExecutor joins its threads at
  interpreter exit, so one hung task hangs the exit; here the backend's exit
  hook decides how long running tasks get (SHUTDOWN_TIMEOUT).
* An idle worker lets go of its database connections once they outlive
  CONN_MAX_AGE, as Django does between two requests. A ThreadPoolExecutor
  thread sleeps on its queue forever, holding whatever its last task opened.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any

from django.db import close_old_connections, connections


class _WorkItem:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Callable[[], None] | None:
        """Run the call; return what settles its future (None: it was cancelled)."""
        if not self.future.set_running_or_notify_cancel():
            return None
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            return partial(self.future.set_exception, exc)
        return partial(self.future.set_result, result)


class ThreadPool(Executor):
    """A pool of up to ``max_workers`` daemon threads, started as calls arrive."""

    def __init__(self, max_workers: int, *, thread_name_prefix: str = "") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1.")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadPool-{id(self):x}"
        # None in the queue tells a worker to leave (and the next one, in turn).
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        # Released by a worker whenever it is done with an item: a submit that
        # can take one reuses that worker instead of starting another thread.
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if (
                not self._idle.acquire(timeout=0)
                and len(self._threads) < self._max_workers
            ):
                self._start_thread()
            self._work.put(_WorkItem(future, fn, args, kwargs))
        return future

    def _start_thread(self) -> None:
        """Start one more worker; if the OS refuses, raise only when none is left."""
        thread = threading.Thread(
            target=self._work_loop,
            name=f"{self._thread_name_prefix}_{next(self._numbers)}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": a thread or memory limit
            # The call is not queued yet: with no worker to run it, it fails
            # here and never runs; with some, it waits for one of them.
            if not self._threads:
                raise
            return
        self._threads.append(thread)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item.future.cancel()
            self._work.put(None)
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    def _work_loop(self) -> None:
        # Connections whose close_at is at or before this were already offered
        # to close_old_connections(); one it could not close (it is inside an
        # atomic block a task never left) must not make the worker spin.
        checked_until = float("-inf")
        try:
            while True:
                try:
                    item = self._next_item(checked_until)
                except queue.Empty:
                    checked_until = time.monotonic()
                    close_old_connections()
                    continue
                if item is None:
                    self._work.put(None)
                    return
                settle = item.run()
                # Drop the references now, not when the next item arrives: a
                # task's arguments and result must not outlive it here.
                del item
                # Idle from here: a call submitted by the future's callbacks
                # (the backend starts its next task there) reuses this worker
                # rather than starting another thread.
                self._idle.release()
                if settle is not None:
                    settle()
                    del settle
        finally:
            connections.close_all()

    def _next_item(self, checked_until: float) -> _WorkItem | None:
        """The next item; queue.Empty when a connection is due to be closed first."""
        try:
            # Under load there always is a next item: take it before working
            # out how long an idle wait may last.
            return self._work.get_nowait()
        except queue.Empty:
            return self._work.get(timeout=_seconds_to_next_expiry(checked_until))


def _seconds_to_next_expiry(checked_until: float) -> float | None:
    """How long until this thread's next open connection passes CONN_MAX_AGE."""
    expiries = [
        conn.close_at
        for conn in connections.all(initialized_only=True)
        if conn.connection is not None
        and conn.close_at is not None
        and conn.close_at > checked_until
    ]
    if not expiries:
        return None
    return max(0.0, min(expiries) - time.monotonic())

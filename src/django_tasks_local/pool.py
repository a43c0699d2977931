"""ProcessPool: a process pool executor that tells what really happens in its children.

``concurrent.futures.ProcessPoolExecutor`` marks a call running when it is
queued to the pipe, and one crashed child breaks the whole pool. Here each
child has its own pipe, so the parent knows which child runs which call:

* a child reports the true start of each task (through ``on_started``);
* a child that dies fails only the call it had started; a call it had not
  started goes to another child;
* a call running past ``timeout`` seconds has its child killed;
* a child is replaced after ``max_tasks_per_child`` calls.

One supervisor thread reads every child's pipe, so a task's start is always
handled before its end.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from traceback import format_exception
from typing import Any

from . import runner

logger = logging.getLogger("django_tasks_local")

# Connections inherited through fork belong to the parent: a child must never
# close them (closing sends the server a goodbye on the parent's socket), and
# must not let them be garbage-collected either, which closes them too.
_inherited_connections: list[Any] = []


class WorkerCrashed(Exception):
    """The worker process running the task died."""


class TaskTimedOut(Exception):
    """The task ran past the backend's TIMEOUT, so its worker process was killed."""


class WorkerError(Exception):
    """A worker process could not run a call or could not send back its result."""


@dataclass(eq=False)
class _Call:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    # Set when the child reports that the task body started.
    started: bool = False
    # Times it was handed to a fresh child after its child died before starting it.
    retries: int = 0


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    call: _Call | None = None
    calls_done: int = 0
    deadline: float | None = None
    timed_out: bool = False
    exiting: bool = False
    pending_messages: list[Any] = field(default_factory=list)


class ProcessPool(Executor):
    def __init__(
        self,
        max_workers: int,
        *,
        mp_context: str | None = None,
        on_started: runner.StartReporter | None = None,
        timeout: float | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        context = multiprocessing.get_context(mp_context)
        if max_tasks_per_child is not None and context.get_start_method() == "fork":
            raise ValueError("max_tasks_per_child cannot be used with the 'fork' start method.")
        self._context = context
        self._max_workers = max_workers
        self._on_started = on_started
        self._timeout = timeout
        self._max_tasks_per_child = max_tasks_per_child
        self._lock = threading.Lock()
        self._pending: deque[_Call] = deque()
        self._children: list[_Child] = []
        self._idle: list[_Child] = []
        self._shutdown = False
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        self._supervisor: threading.Thread | None = None

    # -- Executor API ------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append(_Call(future, fn, args, kwargs))
            self._assign_locked()
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="django-tasks-local-pool", daemon=True
                )
                self._supervisor.start()
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._assign_locked()
            supervisor = self._supervisor
        self._wake()
        if wait and supervisor is not None:
            supervisor.join()

    def terminate(self) -> None:
        """Kill every child now; calls they were running fail as crashed."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            children = list(self._children)
        for child in children:
            child.process.kill()

    @property
    def worker_pids(self) -> list[int]:
        with self._lock:
            return [child.process.pid for child in self._children if child.process.pid]

    # -- assigning calls (lock held) ----------------------------------------

    def _assign_locked(self) -> None:
        while self._pending:
            if self._idle:
                child = self._idle.pop()
            elif len(self._children) < self._max_workers:
                child = self._spawn_locked()
            else:
                break
            call = self._pending.popleft()
            if call.retries == 0 and not call.future.set_running_or_notify_cancel():
                self._idle.append(child)
                continue
            self._send_locked(child, call)
        if self._shutdown and not self._pending:
            for child in self._idle:
                self._stop_locked(child)
            self._idle.clear()

    def _send_locked(self, child: _Child, call: _Call) -> None:
        child.call = call
        try:
            child.conn.send((call.fn, call.args, call.kwargs))
        except OSError:
            # The child is gone; its sentinel will say so and the call, which
            # never started, goes to another child.
            pass
        except Exception as exc:
            child.call = None
            self._idle.append(child)
            call.future.set_exception(
                WorkerError(f"The call could not be sent to a worker process: {exc!r}")
            )

    def _spawn_locked(self) -> _Child:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_child_main,
            args=(child_conn, self._max_tasks_per_child),
            name="django-tasks-local-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        child = _Child(process, parent_conn)
        self._children.append(child)
        return child

    def _stop_locked(self, child: _Child) -> None:
        if not child.exiting:
            child.exiting = True
            try:
                child.conn.send(None)
            except OSError:
                pass

    # -- the supervisor thread --------------------------------------------

    def _wake(self) -> None:
        try:
            self._wakeup_writer.send(b"\0")
        except OSError:
            pass

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._shutdown and not self._children and not self._pending:
                    return
                by_conn = {child.conn: child for child in self._children}
                by_sentinel = {child.process.sentinel: child for child in self._children}
                deadlines = [c.deadline for c in self._children if c.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = wait([self._wakeup_reader, *by_conn, *by_sentinel], timeout)
            if self._wakeup_reader in ready:
                self._wakeup_reader.recv(4096)
            for conn in ready:
                if conn in by_conn:
                    self._receive(by_conn[conn])  # type: ignore[index]
            for sentinel in ready:
                if sentinel in by_sentinel:
                    self._reap(by_sentinel[sentinel])  # type: ignore[index]
            self._enforce_timeouts()

    def _receive(self, child: _Child) -> None:
        while True:
            try:
                if not child.conn.poll():
                    return
                message = child.conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "started":
                self._handle_started(child, message[1])
            else:
                self._handle_done(child, ok=message[1], value=message[2])

    def _handle_started(self, child: _Child, started: tuple[str, str, Any]) -> None:
        with self._lock:
            if child.call is not None:
                child.call.started = True
            if self._timeout is not None:
                child.deadline = time.monotonic() + self._timeout
        if self._on_started is not None:
            try:
                self._on_started(*started)
            except Exception:
                logger.exception("Reporting a task's start failed.")

    def _handle_done(self, child: _Child, ok: bool, value: Any) -> None:
        with self._lock:
            call, child.call = child.call, None
            child.deadline = None
            child.calls_done += 1
            if self._max_tasks_per_child is not None and (
                child.calls_done >= self._max_tasks_per_child
            ):
                child.exiting = True  # it leaves by itself; _reap replaces it
            else:
                self._idle.append(child)
            self._assign_locked()
        if call is None:
            return
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(WorkerError(value))

    def _reap(self, child: _Child) -> None:
        self._receive(child)  # whatever it sent before it ended
        child.process.join(timeout=1)
        with self._lock:
            self._children.remove(child)
            if child in self._idle:
                self._idle.remove(child)
            call, child.call = child.call, None
            error: BaseException | None = None
            if call is not None:
                if not call.started and call.retries < 1 and not child.timed_out:
                    call.retries += 1
                    self._pending.appendleft(call)
                elif child.timed_out:
                    error = TaskTimedOut(
                        f"The task ran longer than TIMEOUT ({self._timeout}s); its "
                        f"worker process (pid {child.process.pid}) was killed."
                    )
                else:
                    error = WorkerCrashed(
                        f"The worker process (pid {child.process.pid}) running the "
                        f"task {_describe_exit(child.process.exitcode)}."
                    )
            self._assign_locked()
        child.conn.close()
        if call is not None and error is not None:
            call.future.set_exception(error)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._children if c.deadline is not None and c.deadline <= now]
            for child in late:
                child.deadline = None
                child.timed_out = True
        for child in late:
            child.process.kill()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"was killed by signal {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


# -- inside the child ------------------------------------------------------


def _child_main(conn: Connection, max_calls: int | None) -> None:
    # Ctrl-C in a terminal reaches the whole process group: let the parent
    # decide what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prepare_django()
    runner.set_process_start_reporter(
        lambda *started: conn.send(("started", started))
    )
    calls = 0
    while max_calls is None or calls < max_calls:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        fn, args, kwargs = message
        try:
            reply = ("done", True, fn(*args, **kwargs))
        except BaseException as exc:
            reply = ("done", False, "".join(format_exception(exc)))
        try:
            conn.send(reply)
        except Exception as exc:
            conn.send(
                ("done", False, f"The result could not be sent back ({type(exc).__name__}: {exc}).")
            )
        calls += 1


def _prepare_django() -> None:
    """Set Django up in a new child; in a forked one, let go of the parent's connections."""
    import django
    from django.apps import apps
    from django.db import connections

    if not apps.ready:
        django.setup()
        return
    _inherited_connections.extend(connections.all(initialized_only=True))
    from asgiref.local import Local

    connections._connections = Local(connections.thread_critical)

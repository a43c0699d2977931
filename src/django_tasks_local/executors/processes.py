"""ProcessPool: a process pool executor that tells what really happens in its children.

``concurrent.futures.ProcessPoolExecutor`` marks a call running when it is
queued to a pipe, and one crashed child breaks the whole pool. Here each child
has its own pipe, so the parent knows which child runs which call:

* a child runs ``initializer(*initargs)`` before it takes its first call;
* a call may report the true start of its work (``report_started()`` in the
  child, ``on_started`` in the parent): its timeout counts from then, and a
  child that dies before then is not the call's fault;
* a child that dies fails only the call it had started (``WorkerCrashed``); a
  call it had not started goes to another child, once;
* a call running past ``timeout`` seconds has its child killed (``TaskTimeout``);
* ``kill(future, error)`` fails a call with ``error`` now: a call sent to a
  child has the child killed, as at a timeout, started or not (never handed
  on); a waiting call is taken out and never runs (a child starting for it
  starts anyway, for the next call);
* a child not ready ``start_timeout`` seconds after its start is killed, and
  the calls waiting fail (``WorkerError``);
* a child that dies before it is ready fails the calls waiting (``WorkerError``
  with its traceback): another would most likely fail the same way. Unless a
  signal killed it (the OOM killer) with no set-up error: then another child
  starts, and only the third such death in a row fails them;
* a child the OS refuses to start (no process or file descriptor left) harms
  no other child: the waiting calls wait for a child alive (another start is
  tried a second later), or fail (``WorkerError``) if there is none, and the
  next call tries again;
* a child ignores SIGINT from its start: Ctrl-C reaches the whole process
  group, and the parent decides what its children do;
* a child ends as soon as its parent dies, even in the middle of a call (on
  Linux the kernel kills it, even while the call holds the GIL);
* a child is replaced after ``max_tasks_per_child`` calls;
* at the interpreter's exit, a child still alive is killed (``SIGKILL``): not
  sent SIGTERM and waited for, as multiprocessing would, which a call that
  ignores SIGTERM would hold up for as long as it runs;
* in a process forked from the pool's (``gunicorn --preload``) the pool is
  broken: its children stay the original process's, and the copy's exit
  leaves them alone;
* any thread of a child can ask its parent something, at any time, several
  at once (``ask_parent()`` in the child, answered by ``handle_request`` in
  the parent).

The pool knows nothing of what it runs. Calls wait in the parent, not in a
child's pipe: the first child free takes the next, and a child that dies can
only have started the one call it was sent. A child gets its next waiting call
as soon as the supervisor reads the end of its last one, before that call's
future is resolved.

Threads. ``submit``, ``kill`` and ``shutdown`` only touch the waiting calls,
the calls to kill and the flags, under the lock, then wake the supervisor
(``submit`` and ``kill`` from a future's callback, in the supervisor thread,
have it dispatch again before it waits instead). The supervisor thread alone
starts, feeds, reads and reaps the children, so a child's state is never
shared between threads; and since it reads every pipe, a call's start is
always handled before its end. It also outlives the children: on Linux the
kernel kills a child when the thread that started it ends. Futures are
resolved, and ``on_started`` and ``handle_request`` called, in the
supervisor thread with no lock held.

Protocol. One duplex pipe per child; every message is a pickled tuple whose
first item names it.

Parent to child:

* ``("call", body)``: run ``fn(*args, **kwargs)``, ``body`` being the pickled
  ``(fn, args, kwargs)``. Sent only to a ready child with no call.
* ``("reply", id, ok, value)``: the answer to the ``"request"`` of that
  ``id``: ``handle_request`` returned ``value`` (``ok``), or raised the
  exception ``value``; ``value`` is pickled.
* ``("stop",)``: exit. Sent only to a child with no call.

Child to parent:

* ``("ready",)``: the initializer ran; the child takes calls.
* ``("failed", traceback)``: the initializer failed; the child exits.
* ``("started", info)``: the call reported its start; ``info`` are the
  ``on_started`` arguments.
* ``("done", ok, value)``: the call returned ``value`` (``ok``), or failed and
  ``value`` is the formatted traceback.
* ``("request", id, payload)``: a thread of the child asks its parent, and
  waits for the ``"reply"`` of that ``id`` (unique in the child); ``payload``
  is pickled.

In the child, one thread reads the pipe: it hands each call, and "stop", to
the call loop, and each reply to the thread that waits for it. A call, a
request's payload and a reply's value travel pickled inside their message:
the receiver always reads the message itself, and unpickles the rest where
a failure is the asker's or the call's alone (an import that a call needs,
which may itself ask the parent, runs in the call loop, not in the reader).
The pipe's end means the parent is gone: the reader ends the child. A
message from the child is sent whole, under a lock, whichever thread sends
it.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import math
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from traceback import format_exception
from typing import Any

from django.db import close_old_connections

from ..exceptions import TaskTimeout, WorkerCrashed, WorkerError

logger = logging.getLogger("django_tasks_local")

# Seconds: the longest single wait of the supervisor.
_LONGEST_WAIT = 24 * 3600.0

# Seconds the exit hook waits for the children it killed to be reaped.
_EXIT_REAP_TIME = 5.0

# <sys/prctl.h>: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1

# Children killed by a signal while they start, one after another, before
# the calls waiting for them fail: a kill from outside (the OOM killer) is
# none of theirs, but a child that always dies starting must not loop.
_MAX_FAILED_STARTS = 3

# Seconds between two tries to start a child after the OS refused one while
# another child lives (the waiting calls are not failed meanwhile).
_START_RETRY_DELAY = 1.0


@dataclass(eq=False)
class _Call:
    future: Future[Any]
    # The pickled ("call", body) message, made by submit().
    message: bytes
    # The future is marked running (set_running_or_notify_cancel succeeded).
    claimed: bool = False
    # The call reported its start (in a pool without on_started: was sent).
    started: bool = False
    # Times it was handed on after its child died before starting it.
    retries: int = 0


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    call: _Call | None = None
    calls_done: int = 0
    # When it must be ready (start_timeout), or its call must end (timeout).
    deadline: float | None = None
    # Told to stop, or killed: it takes no more calls.
    stopping: bool = False
    # Killed at its deadline.
    timed_out: bool = False
    # Killed by kill(): its call fails with this.
    kill_error: BaseException | None = None
    # The pipe reached its end: only the sentinel is left to wait for.
    eof: bool = False
    setup_error: str | None = None

    @property
    def idle(self) -> bool:
        return self.ready and self.call is None and not self.stopping


class ProcessPool(Executor):
    """A pool of up to ``max_workers`` worker processes, each with a pipe of its own.

    See the module's docstring for what it tells of its children.
    """

    def __init__(
        self,
        max_workers: int,
        *,
        mp_context: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        on_started: Callable[..., object] | None = None,
        handle_request: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        max_tasks_per_child: int | None = None,
        start_timeout: float | None = None,
    ) -> None:
        """``on_started``: calls report their start (``report_started()`` in the
        child) and the parent hears of it here. Without it, a call counts as
        started when it is sent.

        ``handle_request(payload)`` answers what a running call asks with
        ``ask_parent(payload)``; what it returns or raises reaches the child.

        ``start_timeout``: seconds a child may take to be ready (its
        initializer included); past them it is killed and the calls waiting
        fail. ``None``: no limit.
        """
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers!r}.")
        context = multiprocessing.get_context(mp_context)
        if max_tasks_per_child is not None and context.get_start_method() == "fork":
            raise ValueError(
                "max_tasks_per_child cannot be used with the 'fork' start method."
            )
        self._context = context
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = initargs
        self._on_started = on_started
        self._handle_request = handle_request
        self._timeout = _seconds(timeout)
        self._start_timeout = _seconds(start_timeout)
        self._max_tasks_per_child = max_tasks_per_child
        # Guards the six attributes below; the supervisor owns everything else.
        self._lock = threading.Lock()
        self._waiting: deque[_Call] = deque()
        # What kill() asked for, in order, not yet done by the supervisor.
        self._kills: list[tuple[Future[Any], BaseException]] = []
        # How many children have a call.
        self._busy = 0
        self._shutdown = False
        self._terminate = False
        self._broken: str | None = None
        self._children: list[_Child] = []
        # Children killed by a signal while starting, since one was last ready.
        self._failed_starts = 0
        # Set by submit() in the supervisor thread: dispatch before waiting.
        self._dispatch_again = False
        # After the OS refused a child while another one lives: no new child
        # before this time (monotonic), so that a refusal is not retried at
        # every event. The waiting calls wait for the living child meanwhile.
        self._next_start: float | None = None
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        # A full buffer already means "wake up": never block on it.
        self._wakeup_writer.setblocking(False)
        self._supervisor = threading.Thread(
            target=self._supervise, name="django-tasks-local-pool", daemon=True
        )
        self._supervisor.start()
        _track(self)

    # -- Executor API ------------------------------------------------------

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        future: Future[Any] = Future()
        # Pickled here, in the caller's thread: a call that cannot be sent
        # fails alone, before any child sees it.
        try:
            body = bytes(ForkingPickler.dumps((fn, args, kwargs)))
            message = bytes(ForkingPickler.dumps(("call", body)))
        except Exception as exc:
            error = WorkerError(f"The call cannot be sent to a worker process: {exc!r}")
            error.__cause__ = exc
            message = b""
        with self._lock:
            if self._broken is not None:
                raise BrokenExecutor(f"The process pool is broken: {self._broken}")
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if message:
                self._waiting.append(_Call(future, message))
        if not message:
            future.set_exception(error)
            return future
        if threading.current_thread() is self._supervisor:
            # Submitted by a future's callback: the supervisor owns the
            # children, so it hands the call to an idle one at once, and the
            # child runs it while the rest of the callbacks run here. With
            # none idle, the call may need a new child: the supervisor
            # dispatches again before it waits (the callback may have run
            # inside _dispatch, after its last look at the waiting calls).
            self._feed_idle()
            self._dispatch_again = True
        else:
            self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; stop each child once the calls waiting for one are done.

        ``cancel_futures``: cancel the calls that wait for a busy child. Those
        that a free child (or one started for them) is about to take still run.
        """
        with self._lock:
            self._shutdown = True
            free = max(0, self._max_workers - self._busy)
            cancelled = self._take_waiting_locked(free) if cancel_futures else []
        self._cancel_all(cancelled)
        if wait and threading.current_thread() is not self._supervisor:
            self._supervisor.join()

    def terminate(self) -> None:
        """Kill every child now; the calls they were running fail as crashed,
        the waiting ones are cancelled."""
        with self._lock:
            self._terminate = self._shutdown = True
            cancelled = self._take_waiting_locked(0)
        self._cancel_all(cancelled)

    def kill(self, future: Future[Any], error: BaseException) -> None:
        """End the call of ``future`` now, failing it with ``error``.

        If a child runs it, the child is killed (SIGKILL), as at a timeout, and
        another starts when a call needs one; if the call still waits in the
        parent, it is taken out and never runs. Safe from any thread. A call
        that ends before the kill lands keeps its own outcome; a future that is
        not this pool's, or is done, is left alone.
        """
        if future.done():
            return
        with self._lock:
            # Past its supervisor, the pool has no call left to end.
            if self._broken is not None or not self._supervisor.is_alive():
                return
            self._kills.append((future, error))
        if threading.current_thread() is self._supervisor:
            # From a future's callback: the supervisor ends the call before
            # it waits again.
            self._dispatch_again = True
        else:
            self._wake()

    def _take_waiting_locked(self, keep: int) -> list[_Call]:
        """Take the waiting calls after the first ``keep``."""
        taken = list(self._waiting)[keep:]
        for _ in taken:
            self._waiting.pop()
        return taken

    def _cancel_all(self, calls: list[_Call]) -> None:
        for call in calls:
            _cancel(call)
        self._wake()

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the children alive now (a copy: the supervisor changes the list)."""
        return [
            child.process.pid for child in list(self._children) if child.process.pid
        ]

    def _forsake(self) -> None:
        """In a forked copy of the pool's process: let go of the children,
        which stay the original process's."""
        # Another thread may have held the lock at the fork.
        self._lock = threading.Lock()
        self._broken = (
            "this process is a fork of the one that made the pool, whose "
            "workers and supervisor stay there"
        )
        for child in self._children:
            # Else the copy's exit would send them SIGTERM (and fail to join them).
            multiprocessing.process._children.discard(child.process)  # type: ignore[attr-defined]
            # A child whose parent dies sees its pipe end then, not when
            # the last copy of the parent exits.
            child.conn.close()
        self._children = []
        self._wakeup_reader.close()
        self._wakeup_writer.close()

    # -- the supervisor thread ---------------------------------------------

    def _wake(self) -> None:
        # Full (a wake-up is pending anyway) or closed: nothing to do.
        with suppress(OSError):
            self._wakeup_writer.send(b"\0")

    def _supervise(self) -> None:
        try:
            while True:
                self._dispatch_again = False
                self._dispatch()
                if self._dispatch_again:
                    continue
                with self._lock:
                    finished = self._shutdown and not self._waiting
                if finished and not self._children:
                    return
                self._wait_for_events()
                # Futures' callbacks and request handlers ran in this thread:
                # drop their database connections past CONN_MAX_AGE, as Django
                # does after a request (and so a forked child inherits fewer).
                close_old_connections()
        except BaseException as exc:
            logger.exception(
                "The process pool's supervisor failed; the pool is broken."
            )
            self._break(exc)
        finally:
            self._wakeup_reader.close()
            self._wakeup_writer.close()

    def _dispatch(self) -> None:
        """Hand waiting calls to idle children; start and stop children as needed."""
        with self._lock:
            terminate, self._terminate = self._terminate, False
        if terminate:
            for child in self._children:
                child.stopping = True
                child.process.kill()
        self._end_killed()
        self._feed_idle()
        with self._lock:
            waiting, shutdown = len(self._waiting), self._shutdown
        active = [child for child in self._children if not child.stopping]
        starting = sum(1 for child in active if not child.ready)
        if self._next_start is not None and time.monotonic() >= self._next_start:
            self._next_start = None
        # Each waiting call beyond those that starting children will take
        # gets a new child, up to max_workers.
        needed = min(waiting - starting, self._max_workers - len(active))
        for _ in range(needed if self._next_start is None else 0):
            if not self._spawn():
                break
        if shutdown and not waiting:
            for child in active:
                if child.call is None:
                    self._stop(child)

    def _end_killed(self) -> None:
        """Do what kill() asked: take out the waiting calls, kill the children
        running the others (``_reap`` fails their calls)."""
        with self._lock:
            if not self._kills:
                return
            errors: dict[Future[Any], BaseException] = {}
            for future, error in self._kills:
                errors.setdefault(future, error)  # the first kill of a call
            self._kills.clear()
            killed = [call for call in self._waiting if call.future in errors]
            if killed:
                kept = [call for call in self._waiting if call.future not in errors]
                self._waiting.clear()
                self._waiting.extend(kept)
        for child in self._children:
            call = child.call
            # A call whose end was read is no longer its child's: it keeps
            # its outcome.
            if call is not None and call.future in errors and child.kill_error is None:
                child.kill_error = errors[call.future]
                child.stopping = True
                child.deadline = None
                child.process.kill()
        # Resolved last: their callbacks may submit, or kill, again.
        for call in killed:
            if _claim(call):  # else cancelled while it waited
                call.future.set_exception(errors[call.future])

    def _feed_idle(self) -> None:
        """Hand waiting calls to idle children (supervisor thread only)."""
        for child in self._children:
            if child.idle and not self._feed(child):
                break

    def _feed(self, child: _Child) -> bool:
        """Send an idle child the next waiting call; False if none is waiting."""
        while True:
            with self._lock:
                call = self._waiting.popleft() if self._waiting else None
            if call is None:
                return False
            if _claim(call):  # else cancelled while it waited
                break
        with self._lock:
            self._busy += 1
        child.call = call
        if self._on_started is None:
            self._start(child)
        # If the child is gone, its sentinel says so, and _reap hands the
        # call, which did not start, to another child.
        with suppress(OSError):
            child.conn.send_bytes(call.message)
        return True

    def _spawn(self) -> bool:
        """Start a child; False if the OS refused (no process, no file descriptor)."""
        try:
            parent_conn, child_conn = self._context.Pipe()
        except OSError as exc:
            self._refused(exc)
            return False
        # A forked child gets a copy of every pipe end the parent holds; it
        # closes them, so that each child sees its pipe end when the parent dies.
        inherited = []
        if self._context.get_start_method() == "fork":
            inherited = [parent_conn, *(child.conn for child in self._children)]
        # Every concrete context has Process; BaseContext's stub does not say so.
        process: BaseProcess = self._context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(child_conn, inherited, self._initializer, self._initargs),
            name="django-tasks-local-worker",
            daemon=True,
        )
        try:
            with _children_allowed(), _sigint_blocked(self._context):
                process.start()
        except Exception as exc:
            parent_conn.close()
            self._refused(exc)
            return False
        finally:
            child_conn.close()
        child = _Child(process, parent_conn)
        if self._start_timeout is not None:
            child.deadline = time.monotonic() + self._start_timeout
        self._children.append(child)
        return True

    def _refused(self, exc: Exception) -> None:
        """A child could not be started: the waiting calls wait for a living
        child, or fail if there is none (nothing else would ever run them)."""
        logger.error("A worker process could not be started.", exc_info=exc)
        if any(not child.stopping for child in self._children):
            self._next_start = time.monotonic() + _START_RETRY_DELAY
        else:
            self._fail_waiting(
                WorkerError(f"A worker process could not be started: {exc!r}")
            )

    def _stop(self, child: _Child) -> None:
        child.stopping = True
        with suppress(OSError):  # already gone
            child.conn.send(("stop",))

    def _wait_for_events(self) -> None:
        conns = {child.conn: child for child in self._children if not child.eof}
        sentinels = {child.process.sentinel: child for child in self._children}
        deadlines = [
            child.deadline for child in self._children if child.deadline is not None
        ]
        if self._next_start is not None:
            deadlines.append(self._next_start)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if timeout is not None:
            # epoll takes at most about 24.8 days: a longer timeout (or an
            # infinite one) is waited out in turns of this loop.
            timeout = min(timeout, _LONGEST_WAIT)
        ready = wait([self._wakeup_reader, *conns, *sentinels], timeout)
        if self._wakeup_reader in ready:
            self._wakeup_reader.recv(4096)
        # Messages before deaths: a child's last words come before its end.
        for item in ready:
            if isinstance(item, Connection) and item in conns:
                self._receive(conns[item])
        for item in ready:
            if isinstance(item, int) and item in sentinels:
                self._reap(sentinels[item])
        self._enforce_timeouts()

    def _receive(self, child: _Child) -> None:
        """Handle every message the child has sent so far."""
        while not child.eof:
            try:
                if not child.conn.poll():
                    return
                data = child.conn.recv_bytes()
            except (EOFError, OSError):
                child.eof = True
                return
            try:
                message = ForkingPickler.loads(data)
            except Exception as exc:
                message = ("done", False, f"The result could not be read back: {exc!r}")
            self._handle(child, message)

    def _handle(self, child: _Child, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            child.ready = True
            child.deadline = None
            self._failed_starts = 0
        elif kind == "failed":
            child.setup_error = message[1]
        elif kind == "started":
            self._start(child)
            if self._on_started is not None:
                try:
                    self._on_started(*message[1])
                except Exception:
                    logger.exception("Reporting a call's start failed.")
        elif kind == "done":
            self._handle_done(child, ok=message[1], value=message[2])
        elif kind == "request":
            self._answer(child, message[1], message[2])
        else:
            logger.error("A worker process sent an unknown message %r.", kind)

    def _start(self, child: _Child) -> None:
        """The child's call has started: a death is its own, its timeout runs."""
        if child.call is not None:
            child.call.started = True
        if self._timeout is not None:
            child.deadline = time.monotonic() + self._timeout

    def _handle_done(self, child: _Child, ok: bool, value: Any) -> None:
        call = self._free(child)
        child.deadline = None
        child.calls_done += 1
        if (
            self._max_tasks_per_child is not None
            and child.calls_done >= self._max_tasks_per_child
            and not child.stopping
        ):
            self._stop(child)  # _reap forgets it; _dispatch starts another when needed
        if child.idle:
            self._feed(child)
        if call is None:
            return
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(WorkerError(value))

    def _free(self, child: _Child) -> _Call | None:
        """Take the child's call from it, if it has one."""
        call, child.call = child.call, None
        if call is not None:
            with self._lock:
                self._busy -= 1
        return call

    def _answer(self, child: _Child, request_id: int, payload: bytes) -> None:
        """Answer a child's request with what ``handle_request`` returns or raises."""
        ok: bool
        try:
            if self._handle_request is None:
                raise WorkerError("This process pool answers no requests.")
            ok, value = True, self._handle_request(ForkingPickler.loads(payload))
        except Exception as exc:
            ok, value = False, exc
        try:
            data = bytes(ForkingPickler.dumps(value))
        except Exception as exc:
            error = WorkerError(f"The answer cannot be sent: {value!r} ({exc!r})")
            ok, data = False, bytes(ForkingPickler.dumps(error))
        with suppress(OSError):  # the child is gone
            child.conn.send(("reply", request_id, ok, data))

    def _reap(self, child: _Child) -> None:
        """The child has ended: settle its call and forget it."""
        self._receive(child)  # whatever it sent before it ended
        child.process.join()  # it has ended: this only collects the exit code
        child.conn.close()
        self._children.remove(child)
        call = self._free(child)
        # Not when it was stopped or killed on purpose (shutdown, terminate,
        # kill), but when it was killed for not starting in time.
        if not child.ready and (child.timed_out or not child.stopping):
            self._failed_start(child)
        if call is None:
            return
        error: BaseException
        if child.kill_error is not None:
            # Killed on purpose, started or not: never handed on.
            error = child.kill_error
        elif child.timed_out:
            error = TaskTimeout(
                f"The call ran longer than its timeout of {self._timeout}s; its "
                f"worker process (pid {child.process.pid}) was killed."
            )
        elif not call.started and call.retries < 1 and not child.stopping:
            # It died before the call started (not killed by terminate()):
            # not the call's fault, so it gets another child, once.
            call.retries += 1
            with self._lock:
                self._waiting.appendleft(call)
            return
        else:
            error = WorkerCrashed(
                f"The worker process (pid {child.process.pid}) running the call "
                f"{_describe_exit(child.process.exitcode)}."
            )
        call.future.set_exception(error)

    def _failed_start(self, child: _Child) -> None:
        """The child died setting up. Another child would most likely fail the
        same way, so the calls waiting for it fail rather than loop; unless a
        signal killed it with no set-up error, and not ``_MAX_FAILED_STARTS``
        times in a row: then another child starts for them."""
        pid, exitcode = child.process.pid, child.process.exitcode
        if child.timed_out:
            reason = (
                f"A worker process (pid {pid}) did not start within "
                f"{self._start_timeout}s, and was killed. Check what its "
                "initializer waits for: an import that hangs (the settings "
                "module, an app), a lock held when it was forked, a server "
                "that does not answer."
            )
        else:
            reason = f"A worker process (pid {pid}) could not start: it "
            reason += _describe_exit(exitcode) + "."
            if child.setup_error:
                reason += "\n" + child.setup_error
            elif exitcode is not None and exitcode < 0:
                self._failed_starts += 1
                if self._failed_starts < _MAX_FAILED_STARTS:
                    logger.warning("%s Starting another one.", reason)
                    return
                reason += f" ({self._failed_starts} starts in a row were killed.)"
        self._failed_starts = 0
        self._fail_waiting(WorkerError(reason))

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.deadline is not None and child.deadline <= now:
                child.deadline = None
                child.timed_out = child.stopping = True
                child.process.kill()

    def _fail_waiting(self, error: Exception) -> None:
        with self._lock:
            calls = list(self._waiting)
            self._waiting.clear()
        for call in calls:
            if _claim(call):
                call.future.set_exception(error)

    def _break(self, exc: BaseException) -> None:
        """The supervisor failed: fail every call and kill every child."""
        with self._lock:
            self._broken = f"{type(exc).__name__}: {exc}"
        error = BrokenExecutor(f"The process pool is broken: {self._broken}")
        self._fail_waiting(error)
        for child in self._children:
            child.process.kill()
            if child.call is not None and not child.call.future.done():
                child.call.future.set_exception(error)


# The pools of this process, for the exit hook and forks.
_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()
_pools_lock = threading.Lock()
_exit_hook_registered = False


def _track(pool: ProcessPool) -> None:
    global _exit_hook_registered
    with _pools_lock:
        _pools.add(pool)
        if not _exit_hook_registered:
            # Registered after multiprocessing's own exit hook (the
            # import of multiprocessing.connection registered it), so it runs
            # before it: atexit runs the last registered first.
            atexit.register(_end_pools_at_exit)
            _exit_hook_registered = True


def _end_pools_at_exit() -> None:
    """At the interpreter's exit: kill every child still alive, and wait until it is reaped.

    multiprocessing's exit hook would send daemonic children SIGTERM and then
    join them: for ever, if a call ignores SIGTERM. Running calls had their
    time already: the task runtime's exit hook (SHUTDOWN_TIMEOUT) runs before
    any atexit hook. Their futures fail ``WorkerCrashed``.
    """
    with _pools_lock:
        pools = list(_pools)
    for pool in pools:
        pool.terminate()
    deadline = time.monotonic() + _EXIT_REAP_TIME
    for pool in pools:
        pool._supervisor.join(max(0.0, deadline - time.monotonic()))


def _forsake_pools_after_fork() -> None:
    """In a process forked from this one (``gunicorn --preload``): the
    pools, their workers, are the original process's, not the copy's."""
    global _pools_lock
    _pools_lock = threading.Lock()
    pools = list(_pools)
    _pools.clear()
    for pool in pools:
        pool._forsake()


os.register_at_fork(after_in_child=_forsake_pools_after_fork)


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a hypercorn worker is one) start our children.

    multiprocessing forbids it so that a daemonic process, terminated without
    clean-up, leaves no orphans behind; our children leave by themselves as
    soon as their parent dies (their pipe ends, ``_exit_with_parent``). Only
    the supervisor thread starts children, so the flag is lifted for no one
    else.
    """
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemon = config.pop("daemon", None)
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon


@contextmanager
def _sigint_blocked(context: BaseContext) -> Iterator[None]:
    """Start a child with SIGINT blocked: it inherits the mask (through fork,
    exec, and a fork server started here) until ``_child_main`` ignores SIGINT.

    Ctrl-C in a terminal reaches the whole process group, and a child still
    starting must not die of it: the parent decides what its workers do.
    Blocking it in this thread costs the parent nothing, since Python runs
    signal handlers in the main thread only. The resource tracker unblocks
    SIGINT in the thread that starts it, so it is started first. A fork
    server started here passes the mask on to every child it forks, for
    other pools too (it ignores SIGINT itself); the children of one started
    elsewhere have its mask, and can die of a Ctrl-C before they ignore it.
    """
    if sys.platform == "win32":  # no pthread_sigmask, no process group's SIGINT
        yield
        return
    if context.get_start_method() != "fork":
        resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _seconds(value: int | float | None) -> float | None:
    """``value``, or ``inf`` for a whole number too large for a float (which
    time.monotonic() could not be added to); either is waited out in turns
    of ``_LONGEST_WAIT``."""
    if isinstance(value, int) and value > sys.float_info.max:
        return math.inf
    return value


def _claim(call: _Call) -> bool:
    """Mark the call's future running, once; False if it was cancelled."""
    if not call.claimed:
        if not call.future.set_running_or_notify_cancel():
            return False
        call.claimed = True
    return True


def _cancel(call: _Call) -> None:
    # A call handed on after its child died is already running: it cannot be
    # cancelled, so it fails the same way.
    if not call.future.cancel():
        call.future.set_exception(
            CancelledError("The pool shut down before it could run.")
        )


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


class _ParentChannel:
    """The child's end of its pipe, shared by the call loop and every thread that asks the parent.

    Its reader thread alone receives: calls go to the call loop, replies to
    the threads that wait for them (see the module's docstring).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        # Guards _replies: the futures of the requests not answered yet, by id.
        self._lock = threading.Lock()
        self._replies: dict[int, Future[tuple[bool, bytes]]] = {}
        self._request_ids = itertools.count()
        # The bodies of the calls to run, in order; None: stop.
        self._calls: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(
            target=self._read, name="django-tasks-local-pipe-reader", daemon=True
        ).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def next_call(self) -> bytes | None:
        """The body of the next call; None once the parent says stop."""
        return self._calls.get()

    def ask(self, payload: Any) -> tuple[bool, bytes]:
        """Send a request, and wait for its reply: ``ok`` (else the value is
        an exception), and the value, pickled."""
        data = bytes(ForkingPickler.dumps(payload))
        reply: Future[tuple[bool, bytes]] = Future()
        with self._lock:
            request_id = next(self._request_ids)
            self._replies[request_id] = reply
        try:
            self.send(("request", request_id, data))
            return reply.result()
        finally:
            with self._lock:
                self._replies.pop(request_id, None)

    def _read(self) -> None:
        try:
            while True:
                message = ForkingPickler.loads(self.conn.recv_bytes())
                if message[0] == "reply":
                    _, request_id, ok, data = message
                    with self._lock:
                        reply = self._replies.pop(request_id, None)
                    # None: the asker left (a signal handler of the call's
                    # raised in it).
                    if reply is not None:
                        reply.set_result((ok, data))
                elif message[0] == "call":
                    self._calls.put(message[1])
                else:
                    self._calls.put(None)
        except (EOFError, OSError):
            # Every parent end of the pipe is closed, so the parent is gone
            # (it closes its own only once this child has ended, and its
            # forks close theirs as they are forked): no one is left to take
            # a result, or to answer. A parent killed outright (SIGKILL, as
            # runserver's autoreloader does to its child) runs no exit hook:
            # without this, a hung call would keep its orphaned worker alive
            # for ever.
            os._exit(1)


# Set in a worker process: its way to the parent.
_parent: _ParentChannel | None = None


def in_worker_process() -> bool:
    """Whether this process is a ProcessPool worker."""
    return _parent is not None


def report_started(*info: Any) -> None:
    """In a worker: the running call's work starts now (the parent's ``on_started(*info)``)."""
    if _parent is None:
        raise RuntimeError("report_started() is for a ProcessPool worker process.")
    _parent.send(("started", info))


def ask_parent(payload: Any) -> Any:
    """In a worker: what the parent's ``handle_request(payload)`` returns, or raises."""
    if _parent is None:
        raise RuntimeError("ask_parent() is for a ProcessPool worker process.")
    try:
        ok, data = _parent.ask(payload)
    except OSError as exc:
        raise WorkerError("The worker process lost its parent.") from exc
    try:
        value = ForkingPickler.loads(data)
    except Exception as exc:
        raise WorkerError(f"The parent's answer could not be read: {exc!r}") from exc
    if not ok:
        raise value
    return value


def _child_main(
    conn: Connection,
    inherited: list[Connection],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    global _parent
    # Ctrl-C in a terminal reaches the whole process group: let the parent
    # decide what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform != "win32":
        # Blocked since the parent started this child (_sigint_blocked): a
        # Ctrl-C pending since then was dropped as SIGINT became ignored.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent()
    for other in inherited:
        other.close()
    _parent = channel = _ParentChannel(conn)
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        channel.send(("failed", "".join(format_exception(exc))))
        raise
    channel.send(("ready",))
    while True:
        body = channel.next_call()
        if body is None:
            return
        try:
            fn, args, kwargs = ForkingPickler.loads(body)
            reply = ("done", True, fn(*args, **kwargs))
        except BaseException as exc:
            reply = ("done", False, "".join(format_exception(exc)))
        try:
            channel.send(reply)
        except OSError:
            return  # the parent is gone
        except Exception as exc:
            channel.send(("done", False, f"The result could not be sent back: {exc!r}"))


def _exit_with_parent() -> None:
    """On Linux, have the kernel kill this child (SIGKILL) the moment its parent dies.

    The pipe's reader ends the child too when the parent dies, but it is a
    thread: a call that holds the GIL (a regex backtracking in C) would keep
    the orphan alive as long as it runs. Under forkserver the kernel's
    parent is the fork server, not the pool's process: the reader is left.

    The kernel's parent is the thread that started the child: the pool's
    supervisor, which ends only once its children are reaped (or killed).
    """
    parent = multiprocessing.parent_process()
    if sys.platform != "linux" or parent is None or os.getppid() != parent.pid:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no prctl to be found
        return
    if os.getppid() != parent.pid:
        # The parent died before the kernel was told to watch it.
        os._exit(1)

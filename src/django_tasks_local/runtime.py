"""The runtime: the shared state of one backend alias in one process, and the path of a task.

Django makes one backend instance per thread; they all reach the same
``Runtime`` (one executor, one store, one waiting line) through ``runtime_for``.

One task's path through it::

    enqueue() --> store: READY --> task_enqueued --> [the transaction commits]
                                                          |
                                                          v
                         waiting line (priority, run_after): a free worker takes the next
                                                          |
                         executor <-- CALL_PER_TASK: run_task(envelope), its future's
                            |                         result is the outcome
                            |     <-- WORKER_LOOP: _work(envelope), a worker in this
                            |                      process that goes on with the next task
                            v
    worker: start report --> mark_started(): RUNNING, task_started
            run_task()   --> Outcome
                            |
                            v
    _finish(): the final transition, the freed worker's next task taken,
               task_finished, the waiters of that result woken
        or, a failed attempt with attempts left (AttemptPolicy):
    _retry():  READY again, its error kept, task_retrying --> the waiting line
               at its next start (its task's run_after)

Timeouts and cancel(). The timer thread that wakes tasks at their run_after
also stops attempts at their deadline (``_stop_attempt``); ``cancel()`` stops
one at once. An executor that can kill a call's worker (``kill(future,
error)``: ProcessPool) does, and the killed call's end is the attempt's. A
thread cannot be killed: its attempt is abandoned, its result moves on at
once, the task sees ``context.is_cancelled``, and its worker stays taken
(``_abandoned``) until the body returns, when its outcome is void.

A worker loop sends its task's signals itself. For one call per task, the
executor's thread (a process pool's supervisor) does only the bookkeeping,
and the runtime's signal thread sends the signals and wakes the waiters.

The store. The runtime keeps the results this process owns in its store's
table, and tells the store each step (``save_*``) outside the lock. A
shared store (the database store) records them where every process reads
them, before this process applies them: the row at enqueue, in the caller's
transaction; the start before the body runs (a task another process took
over is refused: ``NotOwned``); the end before it is applied here. For one
call per task, those writes go through the signal thread, since an
executor's callback thread may be an event loop, where Django's ORM may not
run. At close and at exit, a shared store's unstarted tasks are given up
(left READY for another process) instead of failed; a result this process
does not hold is read, and waited for, in the store.

The lock rule. ``_lock`` guards every attribute below it (but for the
unlocked first reads of ``_executor`` and ``_signal_thread``, each followed
by a locked one, and ``_futures``, which is written with single dict
operations). A method named ``*_locked``
is called with it held and calls out only to waiters' callbacks, which only
pass the news on; every other method takes it itself, and holds it only
around bookkeeping: signals are sent, executors created and called, outside
it, so a slow receiver or a slow executor factory never blocks another
thread's ``get_result()``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.tasks import Task, TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from .exceptions import (
    BackendClosed,
    NotOwned,
    NotStarted,
    TaskCancelled,
    TaskTimeout,
    WaitingLineFull,
)
from .result_ids import new_result_id
from .result_store import ResultStore
from .results import copy_json, ready_result, snapshot
from .retries import AttemptPolicy
from .runner import (
    Envelope,
    Outcome,
    current_worker_id,
    failed_outcome,
    run_started_task,
    run_task,
)
from .serialization import Serializer
from .signals import task_retrying
from .states import FAILED, READY, RUNNING, SUCCESSFUL, transition
from .waiting_line import WaitingLine

logger = logging.getLogger("django_tasks_local")

_NOT_STARTED = "The task backend closed before it started."

# Seconds cancel() waits for a running task's end (a worker process killed).
CANCEL_WAIT = 10.0

# Waiting for a result that another process runs: the store is read after
# this many seconds, then half as long again each time, up to the maximum.
POLL_FIRST_DELAY = 0.005
POLL_MAX_DELAY = 0.5


class PollBackoff:
    """The waits between reads of a result that another process runs.

    One policy for the thread that sleeps (``Runtime._poll``) and the
    coroutine that awaits (``waiting.await_result``): each wait half as long
    again as the one before, up to POLL_MAX_DELAY, and none past the timeout.
    """

    def __init__(self, result_id: str, timeout: float | None, start: float) -> None:
        self.result_id = result_id
        self.timeout = timeout
        self.start = start  # time.monotonic() when the waiting began
        self.delay = POLL_FIRST_DELAY

    def next_wait(self, result: TaskResult[..., Any]) -> float:
        """Seconds until the next read of ``result``, still unfinished.

        Raises TimeoutError once the timeout has passed.
        """
        wait = self.delay
        self.delay = min(self.delay * 1.5, POLL_MAX_DELAY)
        if self.timeout is None:
            return wait
        remaining = self.timeout - (time.monotonic() - self.start)
        if remaining <= 0:
            raise TimeoutError(
                f"Task result {self.result_id} did not finish within "
                f"{self.timeout}s (it is {result.status})."
            )
        return min(wait, remaining)


class Execution(enum.Enum):
    """How the runtime hands tasks to its executor."""

    #: One call per task, ``run_task(envelope)``, whose future's result is the
    #: outcome: for any executor, in this process or in others.
    CALL_PER_TASK = "call-per-task"
    #: A worker loop in this process: the executor runs ``Runtime._work``, and
    #: a worker that finishes a task takes the next waiting one itself. Only
    #: for executors whose workers share this process (threads).
    WORKER_LOOP = "worker-loop"


#: A waiter's callback (``Runtime.watch``): the settled result's copy, or None.
Settled = Callable[["TaskResult[..., Any] | None"], object]


class _Settling:
    """A waiting thread's callback: keeps the copy, and wakes the thread."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: TaskResult[..., Any] | None = None

    def __call__(self, result: TaskResult[..., Any] | None) -> None:
        self.result = result
        self.event.set()


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    alias: str
    # The backend class: the sender of the task signals, as in Django's backends.
    sender: type
    create_executor: Callable[[], Executor]
    serializer: Serializer
    execution: Execution
    max_workers: int
    max_results: int
    # How many tasks may wait for a worker (None: no limit).
    max_waiting: int | None
    # The database alias whose transaction an enqueue waits for; None: none.
    enqueue_on_commit: str | None
    # Seconds running tasks get to finish at close() and at exit.
    shutdown_timeout: float = 5.0
    # Makes the result store; None: the memory store.
    create_store: Callable[[], ResultStore] | None = None
    # Attempts, retries and timeouts, unless a task sets its own.
    attempts: AttemptPolicy = field(default_factory=AttemptPolicy)


def open_transaction(using: str | None) -> Any:
    """The connection of ``using`` if a transaction is open on it, else None.

    An enqueue made inside that transaction waits for it to commit.
    """
    if using is None:
        return None
    connection = transaction.get_connection(using)
    return connection if connection.in_atomic_block else None


class _CommitHook:
    """Hands a task to the waiting line when its transaction commits.

    Django keeps the only strong reference to it in the connection's on-commit
    list; on rollback that list drops it, and the finalizer set in
    ``Runtime._defer_to_commit`` forgets the result.
    """

    __slots__ = ("__weakref__", "envelope", "held", "runtime")

    def __init__(self, runtime: Runtime, envelope: Envelope, held: bool) -> None:
        self.runtime = runtime
        self.envelope = envelope
        # Its row was written outside the transaction, held until it commits.
        self.held = held

    def __call__(self) -> None:
        self.runtime._release_committed(self.envelope, self.held)


class _WorkerLink:
    """What a worker in this process calls back: the start report itself
    (``Envelope.report_started``), and a running task's metadata saves and
    cancellation checks (``runner``). One per runtime."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __call__(self, result_id: str, worker_id: str, started_at: datetime) -> None:
        self._runtime.mark_started(result_id, worker_id, started_at)

    def save_metadata(
        self, result_id: str, attempt: int, metadata: dict[str, Any]
    ) -> None:
        self._runtime.save_metadata(result_id, attempt, metadata)

    def is_cancelled(self, result_id: str, attempt: int) -> bool:
        return (result_id, attempt) in self._runtime._told_to_stop


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        # Serializes the creation of the executor, which may be slow (a Dask
        # Client connecting). Taken before _lock, never while _lock is held.
        self._executor_lock = threading.Lock()
        # An RLock: a rollback can finalize a _CommitHook (and so re-enter)
        # wherever the garbage collector happens to run.
        self._lock = threading.RLock()
        self._store = (
            ResultStore(config.max_results)
            if config.create_store is None
            else config.create_store()
        )
        self._line: WaitingLine[Envelope] = WaitingLine()
        self._executor: Executor | None = None
        # Handed to the executor and not finished: each holds a worker.
        self._running: dict[str, Envelope] = {}
        # Attempts stopped at a timeout or a cancel (their result final, or
        # waiting for its next attempt) whose worker could not be stopped
        # (a thread): each still holds its worker until it returns; by
        # id(envelope). Their (result id, attempt) are in _told_to_stop,
        # which the task sees as context.is_cancelled.
        self._abandoned: dict[int, Envelope] = {}
        self._told_to_stop: set[tuple[str, int]] = set()
        # The executor's futures of those, until done, to cancel at close().
        # Set and popped without the lock (single dict operations); read with it.
        self._futures: dict[str, Future[Any]] = {}
        # Final, their task_finished being sent: not settled yet.
        self._finishing: set[str] = set()
        # Waiting for their transaction to commit.
        self._uncommitted: dict[str, Envelope] = {}
        # Cancelled while handed to the executor: its future's cancellation
        # ends them FAILED (TaskCancelled), not dropped.
        self._cancelling: set[str] = set()
        # Running attempts with a timeout: (deadline (monotonic), sequence,
        # result id, attempt, timeout); the timer thread stops them.
        self._deadlines: list[tuple[float, int, str, int, float]] = []
        self._sequence = itertools.count()
        # What workers in this process call back (the start, metadata).
        self.link = _WorkerLink(self)
        # Called once when a result settles (or vanishes), by its id; and
        # when nothing is unfinished any more. Each only passes the news on
        # (an Event's set, a loop's call_soon_threadsafe): they run under
        # the lock, in whichever thread settles the result.
        self._waiters: dict[str, list[Settled]] = {}
        self._idle_waiters: list[Callable[[], object]] = []
        # Notified when an earlier run_after arrives in the waiting line.
        self._timer_wakeup = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None
        # The interpreter is exiting: no more tasks, ever.
        self._exiting = False
        # Jobs for the signal thread (_send_later), which is started with the
        # first; both are thread-safe on their own.
        self._signal_jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._signal_thread: threading.Thread | None = None

    # -- the caller's side -------------------------------------------------

    def enqueue(
        self,
        task: Task[..., Any],
        args: Any,
        kwargs: Any,
        *,
        result_id: str | None = None,
    ) -> TaskResult[..., Any]:
        """Store a READY result and hand the task on.

        ``result_id`` is for an enqueue forwarded from a worker process, which
        chose the id.
        """
        store = self._store
        if store.shared:
            # Once per process: the lease that the task's row names as its owner.
            store.open(self._adopt)
        result = ready_result(
            task,
            result_id or new_result_id(),
            self.config.alias,
            args,
            kwargs,
            timezone.now(),
        )
        envelope = self.config.serializer.envelope(result, self.link)
        # Copied before it is stored: nobody else can see it yet, and the
        # lock is held no longer than it must be.
        copy = snapshot(result)
        with self._lock:
            if self._exiting:
                raise BackendClosed(
                    f"Task backend {self.config.alias!r} is closed: the interpreter "
                    f"is exiting, so it cannot enqueue {task.module_path!r}."
                )
            limit = self.config.max_waiting
            if limit is not None and self._waiting_count_locked() >= limit:
                raise WaitingLineFull(
                    f"Task backend {self.config.alias!r} has {limit} tasks waiting "
                    f"for a worker (MAX_WAITING): {task.module_path!r} was not "
                    "enqueued. Try again once some have started."
                )
            store.add(result)
        connection = open_transaction(self.config.enqueue_on_commit)
        held = False
        if store.database is not None:
            # The row is written in the store database's open transaction, if
            # any, and the task waits for that one to commit: no worker can
            # see its row before. Otherwise a transaction open elsewhere holds
            # the row until it commits.
            store_connection = open_transaction(store.database)
            held = connection is not None and store_connection is None
            connection = store_connection or connection
            try:
                store.save_enqueued(result, held=held)
            except BaseException:
                with self._lock:
                    store.discard(result.id)
                raise
        try:
            # Sent before the task can start, so task_enqueued always comes first.
            self._send(task_enqueued, copy)
        finally:
            # Even when Ctrl-C interrupts a receiver: the stored task must
            # go on, or it would stay READY for ever.
            if connection is not None:
                self._defer_to_commit(envelope, connection, held)
            else:
                self._release(envelope)
        return copy

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        copy = self.get_held(result_id)
        return copy if copy is not None else self._store.load(result_id)

    def get_held(self, result_id: str) -> TaskResult[..., Any] | None:
        """A copy of the result if this process holds it, else None."""
        with self._lock:
            _check_id(result_id)
            if result_id in self._store:
                return snapshot(self._store.get(result_id))
        return None

    @property
    def shared(self) -> bool:
        """Whether other processes hold results of this alias too (the database store)."""
        return self._store.shared

    def load(self, result_id: str) -> TaskResult[..., Any]:
        """A result as the store records it, wherever it runs."""
        return self._store.load(result_id)

    def open_store(self) -> None:
        """Take part now, before any enqueue: hold a lease, take lost tasks over."""
        self._store.open(self._adopt)

    def watch(self, result_id: str, callback: Settled) -> bool:
        """Call ``callback(copy)`` once the result settles (finished, its signals sent).

        ``copy`` is the waiter's own copy of the final result, taken as it
        settles, so that MAX_RESULTS cannot evict it before the waiter reads
        it; None if the result vanished (its enqueue rolled back). Returns
        False, and never calls it, if the result has settled already. The
        callback runs with the lock held, in the thread that settles the
        result: it must only pass the news on (``loop.call_soon_threadsafe``).
        """
        with self._lock:
            result = self._get_locked(result_id)
            if result.is_finished and result_id not in self._finishing:
                return False
            self._waiters.setdefault(result_id, []).append(callback)
            return True

    def unwatch(self, result_id: str, callback: Settled) -> None:
        """Forget a callback given to ``watch`` (a waiter that gave up)."""
        with self._lock:
            callbacks = self._waiters.get(result_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._waiters.pop(result_id, None)

    def wait_for_result(
        self, result_id: str, timeout: float | None
    ) -> TaskResult[..., Any]:
        start = time.monotonic()
        settled = _Settling()
        try:
            watching = self.watch(result_id, settled)
        except TaskResultDoesNotExist:
            if not self._store.shared:
                raise
            return self._poll(result_id, timeout, start)
        if not watching:
            return self.get_result(result_id)
        try:
            if not settled.event.wait(_wait_time(timeout)):
                status = self.get_result(result_id).status
                raise TimeoutError(
                    f"Task result {result_id} did not finish within {timeout}s "
                    f"(it is {status})."
                )
        finally:
            self.unwatch(result_id, settled)
        if settled.result is None:
            if self._store.shared:
                # Given up or taken over: another process records its end.
                return self._poll(result_id, timeout, start)
            raise TaskResultDoesNotExist(
                f"{result_id}: its enqueue was rolled back while it was awaited."
            )
        return settled.result

    def _poll(
        self, result_id: str, timeout: float | None, start: float
    ) -> TaskResult[..., Any]:
        """Wait for a result that another process runs, by reading the store."""
        backoff = PollBackoff(result_id, timeout, start)
        while not (result := self._store.load(result_id)).is_finished:
            time.sleep(backoff.next_wait(result))
        return result

    def wait_until_idle(self, timeout: float | None) -> None:
        idle = threading.Event()
        with self._lock:
            if self._is_idle_locked():
                return
            self._idle_waiters.append(idle.set)
        try:
            reached = idle.wait(_wait_time(timeout))
        finally:
            with self._lock:
                if idle.set in self._idle_waiters:
                    self._idle_waiters.remove(idle.set)
        if not reached:
            with self._lock:
                unfinished = self._store.unfinished_count
            raise TimeoutError(
                f"Task backend {self.config.alias!r} still had {unfinished} "
                f"unfinished tasks after {timeout}s."
            )

    def close(self, timeout: float | None = None) -> None:
        """Drop the tasks not started; give running ones ``timeout`` seconds; shut the executor down.

        ``timeout`` defaults to SHUTDOWN_TIMEOUT; tasks still running then are
        abandoned (they finish in the background, and their results with
        them). The next enqueue starts a fresh executor.
        """
        if timeout is None:
            timeout = self.config.shutdown_timeout
        running, executor = self._stop(exiting=False)
        self._wind_down(running, executor, time.monotonic() + timeout)

    def _stop(self, *, exiting: bool) -> tuple[list[str], Executor | None]:
        """Drop the waiting tasks, and take the executor out.

        Returns the ids of the running tasks, and the executor to shut down
        once they have had their time (``_wind_down``).
        """
        with self._lock:
            if exiting:
                self._exiting = True
                self._timer_wakeup.notify_all()
            dropped = self._line.drain()
            running = list(self._running)
            executor, self._executor = self._executor, None
            # Handed to the executor, but no worker has started them (a
            # worker process still starting, say): they are dropped too.
            unstarted = {
                result_id: self._futures[result_id]
                for result_id in running
                if result_id in self._futures
                and self._store.get(result_id).status == READY
            }
        # A cancelled future's callback fails its task NotStarted (_on_done),
        # or gives it up (a shared store): it is not among the running tasks
        # that close() gives time to.
        cancelled = {
            result_id for result_id, future in unstarted.items() if future.cancel()
        }
        if dropped or cancelled:
            logger.warning(
                "Task backend %r closed with %d tasks that never started; %s",
                self.config.alias,
                len(dropped) + len(cancelled),
                "they are left READY for another process."
                if self._store.shared
                else "they were dropped.",
            )
            self._drop(dropped)
            if self._store.shared:
                # Now, not when their callbacks come: the exit may not wait.
                self._give_up(list(cancelled))
        running = [result_id for result_id in running if result_id not in cancelled]
        return running, executor

    def _wind_down(
        self, running: list[str], executor: Executor | None, deadline: float
    ) -> None:
        """Wait until ``deadline`` for the ``running`` tasks, then shut ``executor`` down."""
        for result_id in running:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                self.wait_for_result(result_id, remaining)
            except TaskResultDoesNotExist:
                pass  # finished, and already evicted
            except TimeoutError:
                logger.warning(
                    "Task backend %r closed while tasks were still running.",
                    self.config.alias,
                )
                break
        if executor is not None:
            # Only now: some executors (Dask's) cancel what is still running.
            # The plain Executor signature: loky's and Dask's shutdown() take
            # no cancel_futures, and none is needed, since the runtime hands
            # an executor only what a free worker starts at once.
            executor.shutdown(wait=False)
        # The lease goes last: what still runs is recovered as lost.
        self._store.close()

    # -- the worker's side -------------------------------------------------

    def mark_started(
        self, result_id: str, worker_id: str, started_at: datetime
    ) -> None:
        """A worker of this process reports, in its own thread, that the task body starts now.

        task_started is sent at once, in that thread: its receivers run
        before the body, as under ImmediateBackend.
        """
        if self._told_to_stop:
            with self._lock:
                result = self._store.get(result_id)
                if (result_id, result.attempts + 1) in self._told_to_stop:
                    # Cancelled after its worker took it: the body never runs.
                    raise _cancelled_error(result_id)
        if self._store.shared:
            # Recorded before the body runs, and refused (NotOwned) if the
            # task was taken over: a task never runs twice.
            self._save_start(result_id, worker_id, started_at)
        copy = self._apply_start(result_id, worker_id, started_at)
        if copy is not None:
            self._send(task_started, copy)

    def relay_started(
        self, result_id: str, worker_id: str, started_at: datetime
    ) -> None:
        """An executor's own thread (a process pool's supervisor) relays a start
        that happened elsewhere: task_started goes to the signal thread."""
        if self._store.shared:
            # In the signal thread, where the task's end is recorded too:
            # in order, and never in an executor's thread that may not
            # reach the database (an event loop's).
            self._send_later(
                partial(self._record_relayed_start, result_id, worker_id, started_at)
            )
            return
        copy = self._apply_start(result_id, worker_id, started_at)
        if copy is not None:
            self._send_later(partial(self._send, task_started, copy))

    def _record_relayed_start(
        self, result_id: str, worker_id: str, started_at: datetime
    ) -> None:
        try:
            self._save_start(result_id, worker_id, started_at)
        except Exception:
            logger.exception("Could not record the start of task %s.", result_id)
        copy = self._apply_start(result_id, worker_id, started_at)
        if copy is not None:
            self._send(task_started, copy)

    def _save_start(self, result_id: str, worker_id: str, started_at: datetime) -> None:
        with self._lock:
            worker_ids = [*self._store.get(result_id).worker_ids, worker_id]
        self._store.save_started(result_id, worker_ids, started_at)

    def _apply_start(
        self, result_id: str, worker_id: str, started_at: datetime
    ) -> TaskResult[..., Any] | None:
        """READY to RUNNING; a copy for task_started, or None if it was not READY."""
        with self._lock:
            result = self._store.get(result_id)
            if result.status != READY:
                return None
            _start(result, worker_id, started_at)
            self._watch_deadline_locked(result)
            return snapshot(result)

    def _work(self, envelope: Envelope) -> None:
        """Execution.WORKER_LOOP: run ``envelope``, then each task this worker takes next.

        The worker that finishes a task takes the next one from the waiting
        line itself, and marks it started in the same turn of the lock: under
        a backlog no task passes through the executor's queue, and no worker
        sleeps between two tasks.
        """
        worker_id = current_worker_id()
        current: Envelope | None = envelope
        started_at = None  # the first task reports its own start
        while current is not None:
            try:
                if started_at is None:
                    outcome = run_task(current)
                else:
                    outcome = run_started_task(current, worker_id, started_at)
            except BaseException as exc:  # run_task never raises: a bug of ours
                self._submit(self._finish(current, failed_outcome(exc))[0])
                raise
            batch, taken = self._finish(current, outcome, worker_id)
            self._submit(batch)
            current, started_at = taken if taken is not None else (None, None)

    def _on_done(self, envelope: Envelope, future: Future[Outcome | None]) -> None:
        """The one completion callback, for the futures of either execution."""
        if self._futures.get(envelope.result_id) is future:
            # (Not a later attempt's, after this one was abandoned.)
            self._futures.pop(envelope.result_id, None)
        if self._store.shared:
            # The end is recorded in the store first: in the signal thread,
            # since the executor's own thread may be an event loop (Dask's
            # client), where Django's ORM refuses to run.
            self._send_later(partial(self._apply_done, envelope, future))
        else:
            self._apply_done(envelope, future)

    def _apply_done(self, envelope: Envelope, future: Future[Outcome | None]) -> None:
        try:
            outcome = future.result()
        except CancelledError:  # by _stop or cancel(), before any worker took it
            with self._lock:
                cancelled = envelope.result_id in self._cancelling
                self._cancelling.discard(envelope.result_id)
            if cancelled:
                outcome = failed_outcome(_cancelled_error(envelope.result_id))
                self._submit(self._finish(envelope, outcome)[0])
            else:
                self._drop([envelope])
            return
        except BaseException as exc:  # the executor failed the call, not the task
            outcome = failed_outcome(exc)
        # None: a worker loop, which finished its tasks itself. A worker loop
        # that raised has finished its task too, so _finish ignores it; one
        # the executor never ran leaves its task READY, and it fails here.
        if outcome is not None:
            self._submit(self._finish(envelope, outcome)[0])

    def _finish(
        self,
        envelope: Envelope,
        outcome: Outcome,
        worker_id: str | None = None,
        *,
        stopped: bool = False,
    ) -> tuple[list[Envelope], tuple[Envelope, datetime | None] | None]:
        """The one finish path: the final transition, task_finished, the waiters woken.

        With ``worker_id``, a worker in this process that goes on working:
        it sends the signals itself, then takes the next task (returned
        already RUNNING, with its start time; the rest of what can start now
        is returned for the executor). Without it, the task's worker is free
        already: its next task goes to the executor at once, and the signals
        and the waking are left to the signal thread (``_send_later``), so
        that no receiver, however slow, holds up the executor's thread (a
        process pool's supervisor) or the tasks after.

        A failed attempt that is retried goes back to the waiting line
        (``_retry``) instead. The outcome of an attempt that was stopped and
        abandoned (``_stop_attempt``; ``stopped``: the stop's own outcome)
        only frees its worker.
        """
        result_id = envelope.result_id
        if not stopped and id(envelope) in self._abandoned:
            return self._release_abandoned(envelope), None
        not_owned = isinstance(outcome.exception, NotOwned)
        retry_in = None
        if outcome.error is not None and not not_owned:
            retry_in = self._retry_delay(result_id, outcome)
        if retry_in is not None:
            return self._retry(envelope, outcome, retry_in, worker_id), None
        if self._store.shared and not not_owned:
            self._save_end(result_id, outcome)
        batch: list[Envelope] = []
        with self._lock:
            result = self._store.get(result_id)
            if result.is_finished:
                return [], None
            if not_owned:
                # Taken over by another process, which records its end.
                self._store.discard(result_id)
                self._running.pop(result_id, None)
                self._settle_locked(result_id, None)
                return self._take_startable_locked(), None
            started = self._record_outcome_locked(result, outcome)
            if worker_id is None:
                self._running.pop(result_id, None)
                batch = self._take_startable_locked()
        if worker_id is None:
            self._submit(batch)
            self._send_later(partial(self._signal_end, result, started, outcome))
            return [], None
        try:
            self._send_end_signals(result, started, outcome)
        except BaseException:
            # Ctrl-C in the main thread: the task is still settled, and this
            # worker goes no further.
            self._submit(self._settle(result, None)[0])
            raise
        return self._settle(result, worker_id)

    # -- retries, timeouts, cancellation ---------------------------------

    def _retry_delay(self, result_id: str, outcome: Outcome) -> float | None:
        """Seconds until the next attempt after this failed one; None: no more."""
        with self._lock:
            result = self._store.get(result_id)
            if result.is_finished:
                return None
            policy = self.config.attempts
            if policy.max_attempts == 1 and not getattr(result.task, "max_attempts", 0):
                return None  # the usual case: one attempt, nothing to look at
            failed = snapshot(result)
        # The result as this attempt leaves it (FAILED, its error added), for
        # the backoff, as Django's proposal has it. A task that never started
        # here (no attempt) is not retried.
        _apply_outcome(failed, outcome)
        if not failed.worker_ids:
            return None
        exception = outcome.exception_in_hand()
        assert exception is not None  # an outcome with an error has one in hand
        return policy.retry_delay(failed, exception)

    def _retry(
        self,
        envelope: Envelope,
        outcome: Outcome,
        delay: float,
        worker_id: str | None,
    ) -> list[Envelope]:
        """Back to READY, to start again in ``delay`` seconds: the attempt's
        error kept, task_retrying sent, its worker freed."""
        result_id = envelope.result_id
        run_after = timezone.now() + timedelta(seconds=delay)
        with self._lock:
            result = self._store.get(result_id)
            if result.is_finished:
                return []
            started = _requeue(result, outcome, run_after)
            copy = snapshot(result)
            self._running.pop(result_id, None)
            batch = self._take_startable_locked()
        if self._store.shared:
            try:
                self._store.save_retrying(copy)
            except Exception:
                logger.exception("Could not record the retry of task %s.", result_id)
        retry = self.config.serializer.envelope(copy, self.link)
        announce = partial(self._announce_retry, copy, started, outcome, retry)
        if worker_id is not None:
            announce()  # a worker of this process: in its own thread, in order
        else:
            self._send_later(announce)
        return batch

    def _announce_retry(
        self,
        result: TaskResult[..., Any],
        started: TaskResult[..., Any] | None,
        outcome: Outcome,
        retry: Envelope,
    ) -> None:
        """task_retrying (with the attempt's exception in hand), then the next attempt queued."""
        try:
            if started is not None:
                self._send(task_started, started)
            self._send_with_exception(task_retrying, result, outcome)
        finally:
            self._release(retry)

    def _release_abandoned(self, envelope: Envelope) -> list[Envelope]:
        """An abandoned attempt's worker came back: it is free; its outcome is void."""
        with self._lock:
            self._abandoned.pop(id(envelope), None)
            self._told_to_stop.discard((envelope.result_id, envelope.attempt))
            return self._take_startable_locked()

    def _watch_deadline_locked(self, result: TaskResult[..., Any]) -> None:
        """A started attempt with a timeout: the timer thread stops it at its deadline."""
        timeout = self.config.attempts.timeout_of(result.task)
        if timeout is None:
            return
        entry = (
            time.monotonic() + timeout,
            next(self._sequence),
            result.id,
            result.attempts,
            timeout,
        )
        heapq.heappush(self._deadlines, entry)
        self._ensure_timer_locked()

    def _stop_attempt(
        self, result_id: str, attempt: int | None, error: Exception
    ) -> None:
        """End the attempt a worker has with ``error`` (TaskTimeout, TaskCancelled).

        ``attempt``: only if that attempt still runs (None: whichever has a
        worker, started or not). An executor that can kill a call's worker
        (``kill(future, error)``, as ProcessPool) does, and the call's end
        is the attempt's. Otherwise (a thread) the attempt is abandoned: its
        result moves on now (FAILED, or to its next attempt), the task sees
        ``context.is_cancelled`` (or, not started yet, never starts), and its
        worker stays taken until the body returns.
        """
        with self._lock:
            running = self._running.get(result_id)
            if running is None or result_id not in self._store:
                return
            result = self._store.get(result_id)
            if result.is_finished:
                return
            if attempt is not None and (
                result.status != RUNNING or result.attempts != attempt
            ):
                return
            future = self._futures.get(result_id)
            kill = getattr(self._executor, "kill", None)
            if self.config.execution is Execution.WORKER_LOOP or future is None:
                kill = None
            if kill is None:
                del self._running[result_id]
                self._abandoned[id(running)] = running
                self._told_to_stop.add((result_id, running.attempt))
        if kill is not None:
            kill(future, error)
            return
        outcome = failed_outcome(error)
        self._submit(self._finish(running, outcome, stopped=True)[0])

    def _expire_due_locked(self) -> list[tuple[str, int, float]]:
        """Take the attempts whose deadline has passed."""
        now = time.monotonic()
        due = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, result_id, attempt, timeout = heapq.heappop(self._deadlines)
            due.append((result_id, attempt, timeout))
        return due

    def _time_out(self, result_id: str, attempt: int, timeout: float) -> None:
        error = TaskTimeout(
            f"Task result {result_id} ran longer than its timeout of {timeout:g}s "
            f"(attempt {attempt})."
        )
        self._stop_attempt(result_id, attempt, error)

    def cancel(self, result_id: str) -> TaskResult[..., Any]:
        """Cancel a task: a waiting one never starts, a running one is stopped.

        Either way it ends FAILED with TaskCancelled, and task_finished is
        sent; returns the result then. A finished result is returned as it
        is (nothing to cancel). Raises TaskResultDoesNotExist for an unknown
        id, and CannotCancel for a task that another process runs (a shared
        store): only that process can stop it.
        """
        error = _cancelled_error(result_id)
        future = None
        with self._lock:
            _check_id(result_id)
            if result_id not in self._store:
                held = False
            else:
                held = True
                result = self._store.get(result_id)
                if result.is_finished:
                    return snapshot(result)
                waiting = None
                if result.status == READY:
                    waiting = self._line.remove(
                        lambda item: item.result_id == result_id
                    )
                    if waiting is None:
                        waiting = self._uncommitted.pop(result_id, None)
                    if waiting is None and result_id in self._running:
                        future = self._futures.get(result_id)
                        self._cancelling.add(result_id)
                    elif waiting is None:
                        # On its way to the line (a retry between attempts,
                        # a task just taken over): it fails now, and the
                        # line drops it when it arrives (_release).
                        waiting = self.config.serializer.envelope(result, self.link)
        if not held:
            # Another process's (a shared store): cancelled there if it has
            # not started, and announced here, since its owner never will.
            result, cancelled = self._store.cancel_elsewhere(result_id, error)
            if cancelled:
                self._send_with_exception(task_finished, result, failed_outcome(error))
            return result
        if waiting is not None:
            self._submit(self._finish(waiting, failed_outcome(error))[0])
        elif future is not None and future.cancel():
            pass  # _apply_done ends it, FAILED
        else:
            with self._lock:
                self._cancelling.discard(result_id)
            # Running, or a worker has it already.
            self._stop_attempt(result_id, None, error)
        try:
            return self.wait_for_result(result_id, CANCEL_WAIT)
        except TimeoutError:
            return self.get_result(result_id)

    def save_metadata(
        self, result_id: str, attempt: int, metadata: dict[str, Any]
    ) -> None:
        """A running task saved its metadata (``context.save_metadata()``)."""
        with self._lock:
            if result_id not in self._store:
                return
            result = self._store.get(result_id)
            # A worker process's start, relayed to the signal thread (a
            # shared store), may not be applied yet: the save follows it there.
            start_pending = (
                self._store.shared
                and result.status == READY
                and result.attempts + 1 == attempt
                and threading.current_thread() is not self._signal_thread
            )
            if not start_pending:
                if result.status != RUNNING or result.attempts != attempt:
                    return  # an abandoned attempt's: its result has moved on
                object.__setattr__(result, "metadata", metadata)
        if start_pending:
            self._send_later(partial(self.save_metadata, result_id, attempt, metadata))
            return
        if self._store.shared:
            try:
                self._store.save_metadata(result_id, copy_json(metadata))
            except Exception:
                logger.exception("Could not record the metadata of task %s.", result_id)

    def _signal_end(
        self,
        result: TaskResult[..., Any],
        started: TaskResult[..., Any] | None,
        outcome: Outcome,
    ) -> None:
        """In the signal thread: the end signals of a task, then its waiters woken."""
        try:
            self._send_end_signals(result, started, outcome)
        finally:
            self._submit(self._settle(result, None)[0])

    def _send_end_signals(
        self,
        result: TaskResult[..., Any],
        started: TaskResult[..., Any] | None,
        outcome: Outcome,
    ) -> None:
        if started is not None:
            self._send(task_started, started)
        self._send_finished(result, outcome)

    def _send_later(self, job: Callable[[], object]) -> None:
        """Have the signal thread run ``job``, after the jobs given before it.

        One thread per runtime, started at its first job: a task's signals
        keep their order (task_started before task_finished), and a slow
        receiver delays only the signals and waiters queued behind it.
        """
        if self._signal_thread is None:
            with self._lock:
                if self._signal_thread is None:
                    thread = threading.Thread(
                        target=self._run_signal_jobs,
                        name=f"django-tasks-local-{self.config.alias}-signals",
                        daemon=True,
                    )
                    try:
                        thread.start()
                    except RuntimeError:
                        # "can't start new thread" (a thread or memory limit):
                        # no job is queued yet, so this one runs here, late
                        # rather than never; the next call tries again.
                        pass
                    else:
                        self._signal_thread = thread
            if self._signal_thread is None:
                self._run_signal_job(job)
                return
        self._signal_jobs.put(job)

    def _run_signal_jobs(self) -> None:
        while True:
            job = self._signal_jobs.get()
            self._run_signal_job(job)
            del job

    @staticmethod
    def _run_signal_job(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException:  # never ends the signal thread: the next jobs wait
            logger.exception("Sending task signals failed.")

    def _record_outcome_locked(
        self, result: TaskResult[..., Any], outcome: Outcome
    ) -> TaskResult[..., Any] | None:
        """Apply the final transition; a copy for task_started if the start is applied only now."""
        started = _apply_outcome(result, outcome)
        self._finishing.add(result.id)
        self._store.finished(result.id)
        return started

    def _save_end(self, result_id: str, outcome: Outcome) -> None:
        """Record a task's end in a shared store, before this process applies it.

        First there, then here: this process never shows an end (nor evicts
        a result for it) that other processes cannot read yet.
        """
        with self._lock:
            result = self._store.get(result_id)
            if result.is_finished:
                return
            final = snapshot(result)
        _apply_outcome(final, outcome)
        try:
            self._store.save_finished(final)
        except Exception:
            logger.exception("Could not record the end of task %s.", result_id)

    def _send_finished(self, result: TaskResult[..., Any], outcome: Outcome) -> None:
        # A final result never changes again: copied outside the lock.
        self._send_with_exception(task_finished, snapshot(result), outcome)

    def _send_with_exception(
        self, signal: Signal, copy: TaskResult[..., Any], outcome: Outcome
    ) -> None:
        """Send ``signal``; for a failure, with the exception in hand.

        As ImmediateBackend does, so that receivers that read
        ``sys.exc_info()`` (Django's own log line, error trackers) see the
        exception and its traceback.
        """
        exception = outcome.exception_in_hand()
        if exception is None:
            self._send(signal, copy)
            return
        traceback = exception.__traceback__
        try:
            raise exception
        except BaseException:
            self._send(signal, copy)
        finally:
            exception.__traceback__ = traceback

    def _settle(
        self, result: TaskResult[..., Any], worker_id: str | None
    ) -> tuple[list[Envelope], tuple[Envelope, datetime | None] | None]:
        """Wake the result's waiters, free its worker, take what can start now."""
        with self._lock:
            self._finishing.discard(result.id)
            self._running.pop(result.id, None)
            self._settle_locked(result.id, result)
            batch = self._take_startable_locked()
            if worker_id is None or not batch:
                return batch, None
            if self._store.shared:
                # Its start is recorded in the store, outside the lock.
                return batch[1:], (batch[0], None)
            taken, started_at = batch.pop(0), timezone.now()
            result = self._store.get(taken.result_id)
            _start(result, worker_id, started_at)
            self._watch_deadline_locked(result)
            running = snapshot(result)
        self._send(task_started, running)
        return batch, (taken, started_at)

    def _drop(self, envelopes: list[Envelope]) -> None:
        """Tasks that no worker started, because the backend closed: failed,
        or, in a shared store, left READY for another process."""
        if self._store.shared:
            self._give_up([envelope.result_id for envelope in envelopes])
            return
        for envelope in envelopes:
            outcome = failed_outcome(NotStarted(_NOT_STARTED))
            self._submit(self._finish(envelope, outcome)[0])

    def _give_up(self, result_ids: list[str]) -> None:
        """Leave these unstarted tasks to other processes (a shared store)."""
        with self._lock:
            result_ids = [
                result_id
                for result_id in result_ids
                if result_id in self._store
                and self._store.get(result_id).status == READY
            ]
            for result_id in result_ids:
                self._store.discard(result_id)
                self._running.pop(result_id, None)
                self._settle_locked(result_id, None)
        if not result_ids:
            return
        try:
            self._store.save_given_up(result_ids)
        except Exception:
            logger.exception("Could not give up %d tasks.", len(result_ids))

    def _waiting_count_locked(self) -> int:
        """Tasks enqueued that no worker has taken (their commit awaited, too)."""
        return self._store.unfinished_count - len(self._running)

    def _is_idle_locked(self) -> bool:
        return self._store.unfinished_count == 0 and not self._finishing

    def _settle_locked(
        self, result_id: str, result: TaskResult[..., Any] | None
    ) -> None:
        """Wake the result's waiters, each with a copy (None: it vanished)."""
        for callback in self._waiters.pop(result_id, ()):
            callback(None if result is None else snapshot(result))
        if self._idle_waiters and self._is_idle_locked():
            for wake in self._idle_waiters:
                wake()
            self._idle_waiters.clear()

    # -- the waiting line --------------------------------------------------

    def _release(self, envelope: Envelope) -> None:
        task = envelope.task
        with self._lock:
            exiting = self._exiting
            batch = []
            result_id = envelope.result_id
            if result_id not in self._store or self._store.get(result_id).is_finished:
                return  # cancelled before its transaction committed
            if not exiting:
                self._line.push(envelope, task.priority, task.run_after)
                if task.run_after is not None:
                    self._ensure_timer_locked()
                batch = self._take_startable_locked()
        if exiting:
            # Its transaction committed while the interpreter exits: it must
            # still finish, or waiting for it (or for idle) would never end.
            logger.warning(
                "Task backend %r is closed; task %s was dropped before it started.",
                self.config.alias,
                envelope.result_id,
            )
            self._drop([envelope])
        self._submit(batch)

    def _take_startable_locked(self) -> list[Envelope]:
        """Take what free workers can start now, highest priority first."""
        batch = []
        # An abandoned attempt's thread still holds its worker.
        while len(self._running) + len(self._abandoned) < self.config.max_workers:
            envelope = self._line.pop()
            if envelope is None:
                break
            self._running[envelope.result_id] = envelope
            batch.append(envelope)
        return batch

    def _submit(self, batch: list[Envelope]) -> None:
        """Hand each envelope to the executor; a failure fails that task alone."""
        pending = list(batch)
        while pending:
            envelope = pending.pop(0)
            executor = None
            try:
                if self._store.shared and (
                    self.config.execution is Execution.CALL_PER_TASK
                ):
                    # The worker may report its start late, or never (another
                    # process): recorded now, so that a lost process's task
                    # is never run again.
                    self._store.save_dispatched(envelope.result_id)
                executor = self._current_executor()
                future: Future[Any]
                if self.config.execution is Execution.WORKER_LOOP:
                    future = executor.submit(self._work, envelope)
                else:
                    future = executor.submit(run_task, envelope)
                self._futures[envelope.result_id] = future
                future.add_done_callback(partial(self._on_done, envelope))
            except BaseException as exc:
                # The task fails, not the backend: a broken or shut-down
                # executor (or one that could not be created) is replaced for
                # the tasks after. What that frees is handed on in this loop,
                # not by recursion, however many tasks fail this way.
                with self._lock:
                    if executor is not None and self._executor is executor:
                        self._executor = None
                if isinstance(exc, NotOwned):
                    logger.warning("%s", exc)
                pending += self._finish(envelope, failed_outcome(exc))[0]

    def _current_executor(self) -> Executor:
        """The executor, created on first use (or after close()) outside the lock.

        The one read of ``_executor`` without the lock is the fast path
        here: reading a reference is atomic, and a stale None only sends the
        caller to the slow path, which takes the locks.
        """
        executor = self._executor
        if executor is not None:
            return executor
        with self._executor_lock:
            with self._lock:
                executor = self._executor
            if executor is None:
                executor = self.config.create_executor()
                with self._lock:
                    self._executor = executor
        return executor

    def _ensure_timer_locked(self) -> None:
        """One thread per runtime sleeps until the next run_after, however many."""
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._run_timer,
                name=f"django-tasks-local-{self.config.alias}-timer",
                daemon=True,
            )
            self._timer.start()
        else:
            self._timer_wakeup.notify_all()

    def _run_timer(self) -> None:
        """Wake at each run_after that comes, and at each attempt's deadline."""
        while True:
            with self._lock:
                # Due tasks that found no free worker join the startable ones
                # (a finishing task starts them), so the wait below is for a
                # run_after still ahead, not a busy loop on one already past.
                self._line.promote_due()
                while not self._exiting:
                    wait = self._next_wake_locked()
                    if wait is not None and wait <= 0:
                        break
                    self._timer_wakeup.wait(_wait_time(wait))
                if self._exiting:
                    return
                expired = self._expire_due_locked()
                batch = self._take_startable_locked()
            self._submit(batch)
            for result_id, attempt, timeout in expired:
                self._time_out(result_id, attempt, timeout)

    def _next_wake_locked(self) -> float | None:
        """Seconds until the next run_after or deadline (None: none ahead)."""
        waits = []
        due = self._line.next_due()
        if due is not None:
            waits.append(due - time.time())
        if self._deadlines:
            waits.append(self._deadlines[0][0] - time.monotonic())
        return min(waits) if waits else None

    # -- on-commit hand-off ------------------------------------------------

    def _defer_to_commit(self, envelope: Envelope, connection: Any, held: bool) -> None:
        hook = _CommitHook(self, envelope, held)
        with self._lock:
            self._uncommitted[envelope.result_id] = envelope
        weakref.finalize(hook, self._forget_uncommitted, envelope.result_id, held)
        connection.on_commit(hook)

    def _release_committed(self, envelope: Envelope, held: bool) -> None:
        with self._lock:
            self._uncommitted.pop(envelope.result_id, None)
        if held:
            self._store.save_committed(envelope.result_id)
        self._release(envelope)

    def _forget_uncommitted(self, result_id: str, held: bool) -> None:
        """The enqueue was rolled back: the result vanishes with it."""
        with self._lock:
            if result_id not in self._uncommitted:
                return  # committed (or cancelled): the hook is collected after it ran
            del self._uncommitted[result_id]
            self._store.discard(result_id)
            self._settle_locked(result_id, None)
        if held:
            # A row written outside the transaction (held) goes too; at once,
            # so that no reader finds it after the rollback. A row written
            # inside it went with it: no query here, on a connection that
            # is still rolling back.
            try:
                self._store.save_rolled_back(result_id)
            except Exception:
                logger.exception("Could not delete the rolled-back task %s.", result_id)

    # -- helpers -----------------------------------------------------------

    def _get_locked(self, result_id: str) -> TaskResult[..., Any]:
        _check_id(result_id)
        return self._store.get(result_id)

    def _adopt(
        self,
        ready: list[TaskResult[..., Any]],
        lost: list[TaskResult[..., Any]],
        retrying: list[TaskResult[..., Any]],
    ) -> None:
        """The store took over a lost process's tasks: run the READY ones here;
        announce the end of those that may have started there, or their
        retry (retry_crashed), which runs here too."""
        for result in lost:
            self._send_later(partial(self._send, task_finished, result))
        for result in retrying:
            self._send_later(partial(self._send, task_retrying, result))
        for result in [*ready, *retrying]:
            with self._lock:
                if result.id in self._store:
                    continue
                self._store.add(result)
            self._release(self.config.serializer.envelope(result, self.link))

    def _send(self, signal: Signal, result: TaskResult[..., Any]) -> None:
        """Send a task signal; what a receiver raises never reaches our code.

        send_robust catches, and Django's dispatcher logs, what a receiver
        raises as an Exception. A SystemExit or KeyboardInterrupt raised by
        a receiver would stop the sending (and with it a worker, or the pool's
        supervisor): it is logged and dropped too, but for Ctrl-C in the main
        thread, which is the user's.
        """
        try:
            signal.send_robust(sender=self.config.sender, task_result=result)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and (
                threading.current_thread() is threading.main_thread()
            ):
                raise
            logger.exception(
                "A receiver of a task signal raised %s for task %s; it was ignored.",
                type(exc).__name__,
                result.id,
            )


def _start(result: TaskResult[..., Any], worker_id: str, started_at: datetime) -> None:
    transition(
        result,
        RUNNING,
        # The first attempt's start; last_attempted_at is this one's.
        started_at=result.started_at or started_at,
        last_attempted_at=started_at,
        worker_ids=[*result.worker_ids, worker_id],
    )


def _apply_outcome(
    result: TaskResult[..., Any], outcome: Outcome
) -> TaskResult[..., Any] | None:
    """The final transition of ``result``; a copy for task_started if the
    start is applied only now."""
    started = None
    if (
        result.status == READY
        and outcome.worker_id is not None
        and outcome.started_at is not None
    ):
        # The worker could not report its start live (another process
        # with no channel back): apply it now, with its true time.
        _start(result, outcome.worker_id, outcome.started_at)
        started = snapshot(result)
    if outcome.metadata is not None:
        object.__setattr__(result, "metadata", outcome.metadata)
    if outcome.error is None:
        transition(
            result,
            SUCCESSFUL,
            finished_at=outcome.finished_at,
            _return_value=outcome.return_value,
        )
    else:
        transition(
            result,
            FAILED,
            finished_at=outcome.finished_at,
            errors=[*result.errors, outcome.error],
        )
    return started


def _requeue(
    result: TaskResult[..., Any], outcome: Outcome, run_after: datetime
) -> TaskResult[..., Any] | None:
    """A failed attempt's result back to READY, to start again at ``run_after``
    (its task's ``run_after``); a copy for task_started if the start is
    applied only now."""
    started = None
    if result.status == READY and outcome.worker_id and outcome.started_at:
        _start(result, outcome.worker_id, outcome.started_at)
        started = snapshot(result)
    if outcome.metadata is not None:
        object.__setattr__(result, "metadata", outcome.metadata)
    transition(
        result,
        READY,
        errors=[*result.errors, outcome.error],
        task=result.task.using(run_after=run_after),
    )
    return started


def _cancelled_error(result_id: str) -> TaskCancelled:
    return TaskCancelled(f"Task result {result_id} was cancelled.")


def _check_id(result_id: object) -> None:
    if not isinstance(result_id, str):
        raise TaskResultDoesNotExist(
            f"{result_id!r} is not a task result id: ids are str, not "
            f"{type(result_id).__name__}."
        )


def _wait_time(seconds: float | None) -> float | None:
    """``seconds`` as a wait of threading's can take: past TIMEOUT_MAX (an
    infinite timeout, a run_after in year 9999), as long as it takes."""
    if seconds is None or seconds >= threading.TIMEOUT_MAX:
        return None
    return seconds


# -- the registry: one runtime per backend alias and settings, per process --

_registry: dict[Hashable, Runtime] = {}
_registry_lock = threading.Lock()


def runtime_for(key: Hashable, config: Callable[[], RuntimeConfig]) -> Runtime:
    runtime = _registry.get(key)
    if runtime is None:
        with _registry_lock:
            runtime = _registry.get(key)
            if runtime is None:
                runtime = _registry[key] = Runtime(config())
                if not _register_exit_hook():
                    # Made while the interpreter exits: closed from the start.
                    runtime._stop(exiting=True)
    return runtime


def all_runtimes() -> list[Runtime]:
    with _registry_lock:
        return list(_registry.values())


def close_for_exit() -> None:
    """Close every backend of this process for good, as the interpreter's exit does.

    The waiting tasks are dropped; the running ones get SHUTDOWN_TIMEOUT.
    All stop first, then all wait at once, so two backends take as long as
    the slower one, not the sum. Only the first call does anything: the
    interpreter's exit after a server's own shutdown (``asgi``) waits no more.
    """
    global _exited
    with _registry_lock:
        if _exited:
            return
        _exited = True
    stopped = []
    start = time.monotonic()
    for runtime in all_runtimes():
        # One backend's failure (a custom executor's shutdown raising) must
        # not keep the others from closing, nor stop the exit.
        try:
            stopped.append((runtime, runtime._stop(exiting=True)))
        except Exception:
            logger.exception("Closing task backend %r failed.", runtime.config.alias)
    for runtime, (running, executor) in stopped:
        deadline = start + runtime.config.shutdown_timeout
        try:
            runtime._wind_down(running, executor, deadline)
        except Exception:
            logger.exception("Closing task backend %r failed.", runtime.config.alias)


_exit_hook_registered = False
# The exit hook has run: a runtime made after it is closed from the start.
_exited = False


def _register_exit_hook() -> bool:
    """Make sure the exit hook will run; False if it has run, or never will."""
    # threading._register_atexit (what concurrent.futures itself uses), not
    # atexit: its hooks run as soon as the main thread ends, before the
    # interpreter joins non-daemon threads and before every atexit hook, so
    # before multiprocessing terminates daemonic worker processes (running
    # tasks get their time) and while logging still works. Tasks still running
    # when SHUTDOWN_TIMEOUT ends are abandoned: thread workers are daemon
    # threads that nothing joins, and the process pool kills its children
    # still running (an atexit hook of its own), so a hung task cannot hang
    # the exit.
    global _exit_hook_registered
    if _exit_hook_registered:
        return not _exited
    try:
        threading._register_atexit(close_for_exit)  # type: ignore[attr-defined]
    except RuntimeError:
        return False  # the interpreter is already shutting down
    _exit_hook_registered = True
    return True


def _forget_inherited_runtimes() -> None:
    # A forked child (gunicorn --preload) has copies of the parent's runtimes
    # but none of their threads or worker processes: it starts afresh.
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()


os.register_at_fork(after_in_child=_forget_inherited_runtimes)

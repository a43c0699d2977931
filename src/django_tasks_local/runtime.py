"""The shared core behind every backend instance of one alias.

Django makes one backend instance per thread; they all reach the same
``Runtime`` (one executor, one store, one waiting line) through ``runtime_for``.
One lock guards it all: public methods take it, ``_private`` ones assume it is
held. Signals are sent and executors called outside the lock, so a slow
receiver or a full pipe never blocks another thread's bookkeeping.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import Signal, receiver
from django.tasks import Task, TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from .dispatch import WaitingLine
from .result_ids import new_result_id
from .runner import (
    Envelope,
    Outcome,
    capture_error,
    current_worker_id,
    run_started_task,
    run_task,
)
from .serialization import Serializer
from .states import FAILED, READY, RUNNING, SUCCESSFUL, transition
from .store import ResultStore, ready_result, snapshot

logger = logging.getLogger("django_tasks_local")


class BackendClosed(RuntimeError):
    """The backend was closed; it takes no more tasks."""


class NotStarted(Exception):
    """Recorded on a task that was dropped before any worker started it."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    alias: str
    # The backend class: the sender of the task signals, as in Django's backends.
    sender: type
    create_executor: Callable[[], Executor]
    serializer: Serializer
    max_workers: int
    max_results: int
    # The database alias whose transaction an enqueue waits for; None: none.
    enqueue_on_commit: str | None
    # Seconds running tasks get to finish when the interpreter exits.
    shutdown_timeout: float = 5.0
    # Tasks handed to the executor per worker beyond the one it runs, when
    # tasks are waiting (the backend's tasks_ahead_per_worker).
    tasks_ahead_per_worker: int = 0


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

    __slots__ = ("__weakref__", "envelope", "runtime")

    def __init__(self, runtime: Runtime, envelope: Envelope) -> None:
        self.runtime = runtime
        self.envelope = envelope

    def __call__(self) -> None:
        self.runtime._release_committed(self.envelope)


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        # An RLock: a rollback can finalize a _CommitHook (and so re-enter)
        # wherever the garbage collector happens to run.
        self._lock = threading.RLock()
        # Notified when a result that a thread waits for settles (finished,
        # signals sent) or vanishes, and when the last unfinished task settles
        # while a thread waits for idle. Only then: a notify wakes every waiter
        # to take the lock, which under a burst would cost each task a thread
        # switch.
        self._settled = threading.Condition(self._lock)
        # How many threads wait, per result id and for idle.
        self._awaited: dict[str, int] = {}
        self._idle_waiters = 0
        # Notified when an earlier run_after arrives in the waiting line.
        self._timer_wakeup = threading.Condition(self._lock)
        self._store = ResultStore(config.max_results)
        self._line: WaitingLine[Envelope] = WaitingLine()
        self._executor: Executor | None = None
        self._timer: threading.Thread | None = None
        self._in_flight = 0
        # Results whose task_finished is being sent: not settled yet.
        self._finishing: set[str] = set()
        # Results waiting for their transaction to commit.
        self._uncommitted: set[str] = set()
        # Callbacks waiting for a result to settle: see watch().
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._closed = False
        # Tasks handed ahead to the executor that _stop cancelled.
        self._cancelled_ahead = 0

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
        chose the id (see ``pool.enqueue_in_parent``).
        """
        result = ready_result(
            task,
            result_id or new_result_id(),
            self.config.alias,
            args,
            kwargs,
            timezone.now(),
        )
        envelope = self.config.serializer.envelope(result, self.mark_started)
        # Copied before it is stored: nobody else can see it yet, and the
        # lock is held no longer than it must be.
        copy = snapshot(result)
        with self._lock:
            if self._closed:
                raise BackendClosed(
                    f"Task backend {self.config.alias!r} is closed; it cannot "
                    f"enqueue {task.module_path!r}."
                )
            self._store.add(result)
        # Sent before the task can start, so task_enqueued always comes first.
        self._send(task_enqueued, copy)
        connection = open_transaction(self.config.enqueue_on_commit)
        if connection is not None:
            self._defer_to_commit(envelope, connection)
        else:
            self._release(envelope)
        return copy

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        with self._lock:
            return snapshot(self._get_locked(result_id))

    def wait_for_result(
        self, result_id: str, timeout: float | None
    ) -> TaskResult[..., Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                result = self._get_locked(result_id)
                if result.is_finished and result_id not in self._finishing:
                    return snapshot(result)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"Task result {result_id} did not finish within {timeout}s "
                        f"(it is {result.status})."
                    )
                self._awaited[result_id] = self._awaited.get(result_id, 0) + 1
                try:
                    self._settled.wait(remaining)
                finally:
                    if self._awaited[result_id] == 1:
                        del self._awaited[result_id]
                    else:
                        self._awaited[result_id] -= 1

    def watch(self, result_id: str, callback: Callable[[], None]) -> bool:
        """Call ``callback()`` once the result settles or vanishes.

        Returns False, and never calls it, if the result has settled already.

        The callback runs with the lock held, in the thread that settles the
        result: it must only pass the news on (``loop.call_soon_threadsafe``).
        """
        with self._lock:
            result = self._get_locked(result_id)
            if result.is_finished and result_id not in self._finishing:
                return False
            self._watchers.setdefault(result_id, []).append(callback)
            return True

    def unwatch(self, result_id: str, callback: Callable[[], None]) -> None:
        """Forget a callback given to ``watch`` (a waiter that gave up)."""
        with self._lock:
            callbacks = self._watchers.get(result_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._watchers.pop(result_id, None)

    def wait_until_idle(self, timeout: float | None) -> None:
        with self._lock:
            self._idle_waiters += 1
            try:
                idle = self._settled.wait_for(self._is_idle_locked, timeout)
            finally:
                self._idle_waiters -= 1
            if not idle:
                raise TimeoutError(
                    f"Task backend {self.config.alias!r} still had "
                    f"{self._store.unfinished_count} unfinished tasks after {timeout}s."
                )

    def close(self, timeout: float | None = None) -> None:
        """Stop taking tasks; drop the ones not started; let running ones finish.

        Waits up to ``timeout`` seconds (None: as long as it takes) for the
        running tasks. Closing twice does nothing more.
        """
        if self._stop():
            self._wait_for_running(timeout)

    def _stop(self) -> bool:
        """Refuse new tasks and drop the waiting ones; False if already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            dropped = self._line.drain()
            self._timer_wakeup.notify_all()
            ahead = self._executor if self.config.tasks_ahead_per_worker else None
        self._drop(dropped)
        cancelled = 0
        if ahead is not None:
            # The tasks handed ahead have not started either: the executor
            # cancels them, and its futures' callbacks fail them NotStarted
            # (_on_done) in this thread; the running ones finish.
            ahead.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                cancelled = self._cancelled_ahead
        if dropped or cancelled:
            logger.warning(
                "Task backend %r closed with %d tasks that never started; they "
                "were dropped.",
                self.config.alias,
                len(dropped) + cancelled,
            )
        return True

    def _wait_for_running(self, timeout: float | None) -> None:
        """Give running tasks ``timeout`` seconds, then shut the executor down."""
        try:
            self.wait_until_idle(timeout)
        except TimeoutError:
            logger.warning(
                "Task backend %r closed while tasks were still running.",
                self.config.alias,
            )
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            # Only now: some executors (Dask's) cancel what is still running.
            # The plain Executor signature, since loky's and Dask's shutdown()
            # take no cancel_futures; the core hands an executor tasks ahead
            # only if its backend says so, and _stop has cancelled those.
            executor.shutdown(wait=False)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the worker's side -------------------------------------------------

    def mark_started(
        self, result_id: str, worker_id: str, started_at: datetime
    ) -> None:
        """The worker reports that the task body is starting now."""
        with self._lock:
            result = self._store.get(result_id)
            if result.status != READY:
                return
            self._start_locked(result, worker_id, started_at)
            copy = snapshot(result)
        self._send(task_started, copy)

    def _work(self, envelope: Envelope) -> None:
        """Run ``envelope`` in this worker, then each task the worker is handed next.

        For workers in this process. The worker that finishes a task takes the
        next one from the waiting line itself, and marks it started in the same
        turn of the lock: under a backlog no task passes through the executor's
        queue, no worker sleeps between two tasks, and each task takes the lock
        twice in the worker (every turn is a chance for workers to queue up
        behind one that the interpreter switched out while it held the lock).
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
            except BaseException as exc:  # KeyboardInterrupt: run_task lets it by
                self._finish(current, _failure(exc), was_in_flight=True)
                raise
            current, started_at = self._finish_and_take(current, outcome, worker_id)

    def _on_work_done(self, envelope: Envelope, future: Future[None]) -> None:
        """Fail ``envelope`` if the executor never ran ``_work`` for it."""
        try:
            future.result()
            return
        except BaseException as exc:  # the executor failed, not the task
            error = exc
        with self._lock:
            # _work finishes every task it starts, even when it raises: one
            # still READY never reached it.
            never_ran = self._store.get(envelope.result_id).status == READY
        if never_ran:
            self._finish(envelope, self._executor_failure(error), was_in_flight=True)

    def _on_done(self, envelope: Envelope, future: Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except BaseException as exc:  # the executor failed, not the task
            outcome = self._executor_failure(exc)
        self._finish(envelope, outcome, was_in_flight=True)

    def _executor_failure(self, exc: BaseException) -> Outcome:
        """The outcome of a task whose future the executor failed."""
        if isinstance(exc, CancelledError) and self.config.tasks_ahead_per_worker:
            # Handed ahead, then cancelled by _stop: it never started.
            exc = NotStarted("The task backend closed before it started.")
            with self._lock:
                self._cancelled_ahead += 1
        return _failure(exc)

    def _finish(
        self, envelope: Envelope, outcome: Outcome, *, was_in_flight: bool
    ) -> None:
        """Apply the one final transition, then start what the freed worker can."""
        result_id = envelope.result_id
        with self._lock:
            started, finished = self._record_outcome_locked(result_id, outcome)
            batch = []
            if was_in_flight:
                self._in_flight -= 1
                batch = self._take_startable_locked()
        # The next task starts before this one's signals are sent.
        self._submit(batch)
        try:
            self._send_end_signals(started, finished)
        finally:
            with self._lock:
                self._settle_finished_locked(result_id, free_worker=False)

    def _finish_and_take(
        self, envelope: Envelope, outcome: Outcome, worker_id: str
    ) -> tuple[Envelope, datetime] | tuple[None, None]:
        """``_finish`` for a worker in this process that goes on working.

        Returns the task it runs next, already marked RUNNING (its
        ``task_started`` sent), and its start time; or ``(None, None)``.
        """
        result_id = envelope.result_id
        with self._lock:
            started, finished = self._record_outcome_locked(result_id, outcome)
        try:
            self._send_end_signals(started, finished)
        except BaseException:
            with self._lock:
                self._settle_finished_locked(result_id, free_worker=True)
            raise
        with self._lock:
            self._settle_finished_locked(result_id, free_worker=True)
            batch = self._take_startable_locked()
            if not batch:
                return None, None
            # One worker was freed: this worker runs the first task; any more
            # (tasks handed ahead, if the backend asks for them) go to the
            # executor.
            taken, started_at = batch[0], timezone.now()
            result = self._store.get(taken.result_id)
            self._start_locked(result, worker_id, started_at)
            running = snapshot(result)
        self._submit(batch[1:])
        self._send(task_started, running)
        return taken, started_at

    def _record_outcome_locked(
        self, result_id: str, outcome: Outcome
    ) -> tuple[TaskResult[..., Any] | None, TaskResult[..., Any]]:
        """Apply the final transition.

        Returns a copy for task_started (if its start is applied only now),
        and the stored result: final, it never changes again, so it is copied
        for task_finished after the lock is let go (``_send_end_signals``).
        """
        started = None
        result = self._store.get(result_id)
        if (
            result.status == READY
            and outcome.worker_id is not None
            and outcome.started_at is not None
        ):
            # The worker could not report its start live (another process
            # with no channel back): apply it now, with its true time.
            self._start_locked(result, outcome.worker_id, outcome.started_at)
            started = snapshot(result)
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
        self._finishing.add(result_id)
        self._store.finished(result_id)
        return started, result

    def _send_end_signals(
        self, started: TaskResult[..., Any] | None, finished: TaskResult[..., Any]
    ) -> None:
        if started is not None:
            self._send(task_started, started)
        self._send(task_finished, snapshot(finished))

    def _drop(self, envelopes: list[Envelope]) -> None:
        """Fail tasks that no worker started because the backend closed."""
        error = capture_error(NotStarted("The task backend closed before it started."))
        for envelope in envelopes:
            outcome = Outcome(None, None, timezone.now(), error=error)
            self._finish(envelope, outcome, was_in_flight=False)

    def _is_idle_locked(self) -> bool:
        return self._store.unfinished_count == 0 and not self._finishing

    def _settle_finished_locked(self, result_id: str, *, free_worker: bool) -> None:
        self._finishing.discard(result_id)
        if free_worker:
            self._in_flight -= 1
        self._settle_locked(result_id)

    def _settle_locked(self, result_id: str) -> None:
        if result_id in self._awaited or (
            self._idle_waiters and self._is_idle_locked()
        ):
            self._settled.notify_all()
        for callback in self._watchers.pop(result_id, []):
            callback()

    # -- the waiting line --------------------------------------------------

    def _release(self, envelope: Envelope) -> None:
        task = envelope.task
        batch: list[Envelope] = []
        with self._lock:
            closed = self._closed
            if not closed:
                self._line.push(envelope, task.priority, task.run_after)
                if task.run_after is not None:
                    self._ensure_timer_locked()
                batch = self._take_startable_locked()
        if closed:
            # Its transaction committed after close(): it must still finish,
            # or waiting for it (or for idle) would never end.
            logger.warning(
                "Task backend %r is closed; task %s was dropped before it started.",
                self.config.alias,
                envelope.result_id,
            )
            self._drop([envelope])
        self._submit(batch)

    def _take_startable_locked(self) -> list[Envelope]:
        """Take what free workers can start now (and tasks ahead), counting it as in flight."""
        batch = []
        limit = self.config.max_workers * (1 + self.config.tasks_ahead_per_worker)
        while not self._closed and self._in_flight < limit:
            envelope = self._line.pop()
            if envelope is None:
                break
            self._in_flight += 1
            batch.append(envelope)
        return batch

    def _submit(self, batch: list[Envelope]) -> None:
        for envelope in batch:
            executor = None
            try:
                with self._lock:
                    if self._executor is None:
                        if self._closed:
                            raise BackendClosed("The task backend closed first.")
                        self._executor = self.config.create_executor()
                    executor = self._executor
                if self.config.serializer.crosses_processes:
                    outcome = executor.submit(run_task, envelope)
                    outcome.add_done_callback(partial(self._on_done, envelope))
                else:
                    work = executor.submit(self._work, envelope)
                    work.add_done_callback(partial(self._on_work_done, envelope))
            except BaseException as exc:
                # The task fails, not the backend: a broken or shut-down
                # executor (or one that could not be created) is replaced for
                # the tasks after.
                with self._lock:
                    if self._executor is executor:
                        self._executor = None
                self._finish(envelope, _failure(exc), was_in_flight=True)

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
        while True:
            with self._lock:
                # Due tasks that found no free worker join the startable ones
                # (a finishing task starts them), so the wait below is for a
                # run_after still ahead, not a busy loop on one already past.
                self._line.promote_due()
                due = self._line.next_due()
                while not self._closed and (due is None or due > time.time()):
                    self._timer_wakeup.wait(None if due is None else due - time.time())
                    due = self._line.next_due()
                if self._closed:
                    return
                batch = self._take_startable_locked()
            self._submit(batch)

    # -- on-commit hand-off ------------------------------------------------

    def _defer_to_commit(self, envelope: Envelope, connection: Any) -> None:
        hook = _CommitHook(self, envelope)
        with self._lock:
            self._uncommitted.add(envelope.result_id)
        weakref.finalize(hook, self._forget_uncommitted, envelope.result_id)
        connection.on_commit(hook)

    def _release_committed(self, envelope: Envelope) -> None:
        with self._lock:
            self._uncommitted.discard(envelope.result_id)
        self._release(envelope)

    def _forget_uncommitted(self, result_id: str) -> None:
        """The enqueue was rolled back: the result vanishes with it."""
        with self._lock:
            if result_id in self._uncommitted:
                self._uncommitted.discard(result_id)
                self._store.discard(result_id)
                self._settle_locked(result_id)

    # -- helpers -----------------------------------------------------------

    def _get_locked(self, result_id: str) -> TaskResult[..., Any]:
        if not isinstance(result_id, str):
            raise TaskResultDoesNotExist(
                f"{result_id!r} is not a task result id: ids are str, not "
                f"{type(result_id).__name__}."
            )
        return self._store.get(result_id)

    def _start_locked(
        self, result: TaskResult[..., Any], worker_id: str, started_at: datetime
    ) -> None:
        transition(
            result,
            RUNNING,
            started_at=started_at,
            last_attempted_at=started_at,
            worker_ids=[*result.worker_ids, worker_id],
        )

    def _send(self, signal: Signal, result: TaskResult[..., Any]) -> None:
        # send_robust: a failing receiver must not lose the task or wedge a
        # worker. Django's dispatcher already logs what a receiver raised.
        signal.send_robust(sender=self.config.sender, task_result=result)


def _failure(exc: BaseException) -> Outcome:
    """The outcome of a task that failed outside its own code."""
    return Outcome(None, None, timezone.now(), error=capture_error(exc))


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
                _register_exit_hook()
    return runtime


def all_runtimes() -> list[Runtime]:
    with _registry_lock:
        return list(_registry.values())


@receiver(setting_changed)
def _forget_closed_runtimes(*, setting: str, **kwargs: Any) -> None:
    # close() is final for an alias and its settings in this process; but when
    # TASKS changes (override_settings in tests), a backend built afresh from
    # settings that were closed before starts with a fresh runtime.
    if setting == "TASKS":
        with _registry_lock:
            for key, runtime in list(_registry.items()):
                if runtime.closed:
                    del _registry[key]


def _close_at_exit() -> None:
    """Close every runtime: drop the waiting tasks, give running ones SHUTDOWN_TIMEOUT.

    All stop taking tasks first, then all wait at once, so two backends
    take as long as the slower one, not the sum.
    """
    stopped = []
    for runtime in all_runtimes():
        # One backend's failure (a custom executor's shutdown raising) must
        # not keep the others from closing, nor stop the exit.
        try:
            if runtime._stop():
                stopped.append(runtime)
        except Exception:
            logger.exception("Closing task backend %r failed.", runtime.config.alias)
    start = time.monotonic()
    for runtime in stopped:
        remaining = start + runtime.config.shutdown_timeout - time.monotonic()
        try:
            runtime._wait_for_running(max(0.0, remaining))
        except Exception:
            logger.exception("Closing task backend %r failed.", runtime.config.alias)


_exit_hook_registered = False


def _register_exit_hook() -> None:
    # threading._register_atexit (what concurrent.futures itself uses), not
    # atexit: its hooks run as soon as the main thread ends, before the
    # interpreter joins non-daemon threads and before every atexit hook, so
    # before multiprocessing terminates daemonic worker processes (running
    # tasks get their time) and while logging still works. Tasks still running
    # when SHUTDOWN_TIMEOUT ends are abandoned: thread workers are daemon
    # threads, process workers daemonic children that multiprocessing
    # terminates; nothing joins them, so a hung task cannot hang the exit.
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    try:
        threading._register_atexit(_close_at_exit)  # type: ignore[attr-defined]
    except RuntimeError:
        return  # the interpreter is already shutting down
    _exit_hook_registered = True


def _forget_inherited_runtimes() -> None:
    # A forked child (gunicorn --preload) has copies of the parent's runtimes
    # but none of their threads or worker processes: it starts afresh.
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()


os.register_at_fork(after_in_child=_forget_inherited_runtimes)

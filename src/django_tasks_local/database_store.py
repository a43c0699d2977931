"""The database store: task results in a Django database, shared by every process.

The runtime keeps the results this process owns in its memory table, as with
the memory store, and this store writes each step through to the database
(``StoredResult``), where any process reads them. Every write of an owner is
conditional on still owning the row, so a process that was taken over
(frozen past its lease) finds out at its next write, instead of running a
task twice.

Leases and recovery. Each process that runs tasks of an alias holds a
``Lease`` row that its keeper thread renews every ``recovery_timeout / 6``
seconds, for ``2/3`` of ``recovery_timeout``. At each renewal the keeper
looks for rows whose owner holds no live lease (a process stopped, killed,
or given up on), and for each such owner, with updates conditional on that
owner (atomic on SQLite and PostgreSQL alike, no ``select_for_update()``):

* a row that may have started (RUNNING, or handed to a worker) becomes
  FAILED with ``ProcessLost``: a task is never run twice behind its back;
* a row held for another database's transaction is deleted: that
  transaction never committed, or the process would have released it;
* a READY row is claimed by this process, and run here once (a retry
  waiting for its next attempt too, at its ``run_after``).

So a lost process's tasks are settled within ``2/3 + 1/6`` of
``recovery_timeout`` after its last renewal. A clean shutdown gives its
unstarted rows up (owner ``""``, which no lease holds) and deletes its lease,
so another process takes them at its next renewal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, JSONField, Q
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from .exceptions import CannotCancel, NotOwned, ProcessLost
from .models import FinishedCount, Lease, StoredResult
from .result_store import Adopt, ResultStore, shown
from .results import metadata_of, new_result
from .retries import AttemptPolicy
from .runner import HOSTNAME, TaskReference, capture_error
from .states import FAILED, READY, RUNNING, transition

logger = logging.getLogger("django_tasks_local")

#: The owner of a row that a clean shutdown gave up: no lease is ever named so.
NOBODY = ""
#: The longest id a row holds (ids are 32 hex digits; a worker process's own
#: forwarded enqueue may choose one).
ID_LENGTH = 64


class _Turns:
    """One writer at a time; one marked ``first`` goes before those waiting.

    A plain lock lets a worker that writes its task's end, then the prune,
    then its next task's start, take it again and again while an enqueue
    waits. Each ``give()`` wakes one waiter, the first in line if any: waking
    them all would have them fight for the GIL (the enqueue's thread among
    them) for a turn that only one gets. (``take()`` and ``give()`` rather
    than a context manager: the enqueue's own write pays for every
    microsecond here.)
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        self._firsts = threading.Condition(lock)
        self._others = threading.Condition(lock)
        self._taken = False
        self._firsts_waiting = 0

    def take(self, *, first: bool) -> None:
        with self._firsts:  # The lock both conditions share.
            try:
                if first:
                    self._firsts_waiting += 1
                    try:
                        while self._taken:
                            self._firsts.wait()
                    finally:
                        self._firsts_waiting -= 1
                else:
                    while self._taken or self._firsts_waiting:
                        self._others.wait()
            except BaseException:
                # Interrupted (KeyboardInterrupt), perhaps once woken: the
                # wake-up goes to the next, or the others would wait forever.
                if not self._taken:
                    self._wake_next_locked()
                raise
            self._taken = True

    def give(self) -> None:
        with self._firsts:
            self._taken = False
            self._wake_next_locked()

    def _wake_next_locked(self) -> None:
        # Whoever is woken takes the turn, or finds it taken again (by one
        # that never waited) and waits on: that taker's give() wakes the
        # next. So a waiting one is woken at every give().
        if self._firsts_waiting:
            self._firsts.notify()
        else:
            self._others.notify()


class _PrivateConnection(threading.local):
    connection: Any = None


class DatabaseStore(ResultStore):
    """The memory table of this process's results, written through to ``database``."""

    shared = True
    database: str

    def __init__(
        self,
        max_results: int,
        *,
        alias: str,
        database: str,
        recovery_timeout: float,
        attempts: AttemptPolicy | None = None,
    ) -> None:
        super().__init__(max_results)
        self.alias = alias
        self.database = database
        self.recovery_timeout = recovery_timeout
        # Whether a lost process's task is tried again (retry_crashed).
        self.attempts = attempts or AttemptPolicy()
        self.lease_id = f"{HOSTNAME}:{os.getpid()}:{secrets.token_hex(4)}"
        self._keeper: threading.Thread | None = None
        self._registered = threading.Event()
        self._stopping = threading.Event()
        self._open_lock = threading.Lock()
        self._open_error: BaseException | None = None
        # SQLite lets one writer in at a time, and makes the others sleep
        # (1 ms, 2 ms, 5 ms... up to its busy timeout) when they collide:
        # this process's threads take turns on a lock of their own instead,
        # woken the moment it is free. PostgreSQL locks rows, not the database.
        sqlite = connections[database].vendor == "sqlite"
        self._turns = _Turns() if sqlite else None
        # This thread's own connection, for writes on SQLite (_connection).
        self._private = _PrivateConnection()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this process's turn to write (SQLite), for a write through
        the ORM: as ``_write()`` does for its statements."""
        if self._turns is None or connections[self.database].in_atomic_block:
            yield
            return
        self._turns.take(first=False)
        try:
            yield
        finally:
            self._turns.give()

    def _write(
        self, statement: str, values: Iterable[Any], *, first: bool = False
    ) -> int:
        """Run one of ``_statements`` that writes: the rows it changed.

        On SQLite, in this process's turn, and on one of this thread's own
        connections (``_private_connection()``); but never inside a
        transaction on the store's database: the write joins it (and commits
        or rolls back with it), and needs no turn, since that transaction
        holds the database's write lock already (and another thread, waiting
        for that lock, may hold the turn). ``first``: before those waiting.
        """
        shared = connections[self.database]
        if self._turns is None or shared.in_atomic_block:
            return self._execute(shared, statement, values)
        self._turns.take(first=first)
        try:
            return self._execute(self._private_connection(shared), statement, values)
        finally:
            self._turns.give()

    def _read(self, statement: str, values: Iterable[Any]) -> int:
        """Run one of ``_statements`` that reads: the one number it reads.
        It needs no turn (nor SQLite's write lock)."""
        shared = connections[self.database]
        if self._turns is None or shared.in_atomic_block:
            return self._execute(shared, statement, values)
        return self._execute(self._private_connection(shared), statement, values)

    def _private_connection(self, shared: Any) -> Any:
        """This thread's own connection to the store's SQLite database, kept open.

        The worker threads close their connections around every task
        (``close_old_connections()``, as Django does around a request), and
        the store writes before and after each one; reopening a SQLite file
        costs more than the write. Not on PostgreSQL, where each would hold a
        server connection for the life of its thread: there ``CONN_MAX_AGE``
        (or a pool) decides.
        """
        private = self._private.connection
        if private is None:
            settings = {**shared.settings_dict, "CONN_MAX_AGE": None}
            private = self._private.connection = type(shared)(settings, self.database)
        if private.errors_occurred:
            # Closed if the error left it broken: the next write reconnects.
            # (Nothing else would close it: it stays in autocommit, and its
            # CONN_MAX_AGE is None.)
            private.close_if_unusable_or_obsolete()
        return private

    def _rows(self) -> Any:
        return StoredResult.objects.using(self.database).filter(backend=self.alias)

    def _unfinished(self, owner: str) -> Any:
        # finished_at IS NULL: found by the (backend, finished_at) index.
        return self._rows().filter(finished_at__isnull=True, owner=owner)

    def _owned(self, result_id: str) -> Any:
        return self._rows().filter(id=result_id, owner=self.lease_id)

    # -- the lease ---------------------------------------------------------

    def open(self, adopt: Adopt) -> None:
        """Register this process's lease (once), and start the keeper that renews it."""
        if self._registered.is_set() and self._open_error is None:
            return
        with self._open_lock:
            if self._keeper is None:
                self._stopping = threading.Event()
                self._keeper = threading.Thread(
                    target=self._keep,
                    args=(adopt, self._stopping),
                    name=f"django-tasks-local-{self.alias}-lease",
                    daemon=True,
                )
                self._keeper.start()
        if connections[self.database].in_atomic_block and not self._registered.is_set():
            # The keeper's first write may wait for the caller's transaction
            # (SQLite locks the whole database): waiting for the keeper here
            # would deadlock. Until it registers, another process may take
            # this process's READY rows over; its conditional writes keep
            # the task from running twice. An error is raised at the next open.
            return
        self._registered.wait()
        if self._open_error is not None:
            error, self._open_error = self._open_error, None
            with self._open_lock:
                self._keeper = None
                self._registered.clear()
            raise error

    def close(self) -> None:
        """Stop renewing, and delete the lease: what is left of ours is others' now."""
        self._stopping.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
        if self._registered.is_set():
            try:
                Lease.objects.using(self.database).filter(id=self.lease_id).delete()
            except Exception:
                logger.exception("Could not delete lease %s.", self.lease_id)
        with self._open_lock:
            # Open again at the next enqueue, with the same lease id.
            self._keeper = None
            self._registered.clear()

    def _keep(self, adopt: Adopt, stopping: threading.Event) -> None:
        period = self.recovery_timeout / 6
        try:
            self._renew()
        except BaseException as exc:
            self._open_error = exc
            self._registered.set()
            connections[self.database].close()
            return
        self._registered.set()
        while True:
            try:
                self._recover(adopt)
            except Exception:
                logger.exception(
                    "Task backend %r could not look for lost tasks.", self.alias
                )
                connections[self.database].close()
            if stopping.wait(period):
                break
            try:
                self._renew()
            except Exception:
                logger.exception(
                    "Task backend %r could not renew its lease %s.",
                    self.alias,
                    self.lease_id,
                )
                connections[self.database].close()
        connections[self.database].close()

    def _renew(self) -> None:
        now = timezone.now()
        expires_at = now + timedelta(seconds=self.recovery_timeout * 2 / 3)
        leases = Lease.objects.using(self.database)
        if not leases.filter(id=self.lease_id).update(expires_at=expires_at):
            leases.create(
                id=self.lease_id,
                backend=self.alias,
                hostname=HOSTNAME,
                pid=os.getpid(),
                started_at=now,
                expires_at=expires_at,
            )

    def _recover(self, adopt: Adopt) -> None:
        """Settle the tasks of owners with no live lease; adopt their READY ones."""
        now = timezone.now()
        leases = Lease.objects.using(self.database)
        live = leases.filter(backend=self.alias, expires_at__gt=now).values("id")
        lost_owners = set(
            self._rows()
            .filter(finished_at__isnull=True)  # READY or RUNNING
            .exclude(owner__in=live)
            .exclude(owner=self.lease_id)
            .values_list("owner", flat=True)
            .distinct()
        )
        adopted: list[TaskResult[..., Any]] = []
        failed: list[TaskResult[..., Any]] = []
        retrying: list[TaskResult[..., Any]] = []
        for owner in lost_owners:
            lost, again = self._fail_lost(owner, now)
            failed += lost
            retrying += again
            self._unfinished(owner).filter(status=READY, held=True).delete()
            waiting = self._unfinished(owner).filter(
                status=READY, dispatched=False, held=False
            )
            ids = list(waiting.values_list("id", flat=True))
            # Conditional on the old owner: of two processes recovering at
            # once, each row goes to the one whose update lands first.
            waiting.filter(id__in=ids).update(owner=self.lease_id)
            adopted += [
                _to_result(row)
                for row in self._rows().filter(
                    id__in=ids, owner=self.lease_id, status=READY
                )
            ]
        leases.filter(
            backend=self.alias,
            expires_at__lt=now - timedelta(seconds=self.recovery_timeout),
        ).delete()
        if adopted or failed or retrying:
            adopt(adopted, failed, retrying)

    def _fail_lost(
        self, owner: str, now: datetime
    ) -> tuple[list[TaskResult[..., Any]], list[TaskResult[..., Any]]]:
        """ProcessLost for the tasks of ``owner`` that may have started: FAILED,
        or, for a task whose attempts allow it (``retry_crashed``), READY for
        its next attempt here. Returns (failed, retrying)."""
        may_have_started = self._unfinished(owner).filter(
            Q(status=RUNNING) | Q(status=READY, dispatched=True)
        )
        message = (
            f"The process that ran this task ({owner}) stopped renewing its lease "
            f"on task backend {self.alias!r}; it was found lost at "
            f"{now.isoformat()}. The task may have run in part, or to the end."
        )
        lost_error = ProcessLost(message)
        error = capture_error(lost_error)
        failed: list[TaskResult[..., Any]] = []
        retrying: list[TaskResult[..., Any]] = []
        # One row at a time: each keeps its earlier attempts' errors, and
        # its task's attempts decide. Conditional on the old owner, as above.
        for row in may_have_started:
            # The result as this attempt leaves it, for its task's attempts.
            failed_view = _to_result(row)
            transition(failed_view, FAILED, errors=[*failed_view.errors, error])
            delay = self.attempts.retry_delay(failed_view, lost_error)
            errors = [asdict(e) for e in failed_view.errors]
            same = self._rows().filter(id=row.id, owner=owner, finished_at__isnull=True)
            if delay is None:
                changed = same.update(
                    status=FAILED, finished_at=now, errors=errors, owner=self.lease_id
                )
            else:
                changed = same.update(
                    status=READY,
                    errors=errors,
                    run_after=now + timedelta(seconds=delay),
                    dispatched=False,
                    owner=self.lease_id,
                )
            if changed:
                row.refresh_from_db()
                (failed if delay is None else retrying).append(_to_result(row))
        return failed, retrying

    # -- a task's life -----------------------------------------------------

    def save_enqueued(self, result: TaskResult[..., Any], *, held: bool) -> None:
        task = result.task
        values = {
            "id": result.id,
            "backend": self.alias,
            "task_path": task.module_path,
            "priority": task.priority,
            "queue_name": task.queue_name,
            "run_after": task.run_after,
            "takes_context": task.takes_context,
            "args": result.args,
            "kwargs": result.kwargs,
            "status": READY,
            "enqueued_at": result.enqueued_at,
            "started_at": None,
            "last_attempted_at": None,
            "finished_at": None,
            "return_value": None,
            "errors": [],
            "worker_ids": [],
            "owner": self.lease_id,
            "dispatched": False,
            "held": held,
            "metadata": metadata_of(result),
        }
        # First in line: a caller waits for its enqueue, a worker's writes
        # can wait for it.
        self._write("insert", values.values(), first=True)

    def save_committed(self, result_id: str) -> None:
        with self._writing():
            self._owned(result_id).update(held=False)

    def save_dispatched(self, result_id: str) -> None:
        updated = self._write(
            "dispatch", [True, result_id, self.alias, self.lease_id, READY]
        )
        if not updated:
            raise NotOwned(self._not_owned(result_id))

    def save_started(
        self, result_id: str, worker_ids: list[str], started_at: datetime
    ) -> None:
        values = [RUNNING, started_at, started_at, worker_ids, True]
        updated = self._write(
            "start", [*values, result_id, self.alias, self.lease_id, READY]
        )
        if not updated:
            raise NotOwned(self._not_owned(result_id))

    def save_finished(self, result: TaskResult[..., Any]) -> None:
        errors = [asdict(error) for error in result.errors]
        values = [
            result.status,
            result.started_at,
            result.last_attempted_at,
            result.finished_at,
            result._return_value,  # type: ignore[attr-defined]
            errors,
            result.worker_ids,
            True,
            metadata_of(result),
        ]
        where = [result.id, self.alias, self.lease_id, READY, RUNNING]
        updated = self._write("finish", [*values, *where])
        self._prune()
        if not updated:
            logger.warning(
                "%s: its end (%s) was not recorded, since %s",
                result.id,
                result.status,
                self._not_owned(result.id),
            )

    def _prune(self) -> None:
        """Past max_results finished rows, the oldest go: down to max_results
        less a tenth, so that the next few task ends only look.

        The look reads the alias's count of finished rows (``FinishedCount``,
        kept by the database's triggers): one row, whatever max_results is.
        It needs no turn (nor SQLite's write lock): an enqueue waits for none
        of it. The prune sets the count again from the rows themselves: a
        count that drifted (the results table emptied by a ``TRUNCATE``,
        which fires no trigger) is right again after one prune.
        """
        if self._read("past_bound", [self.alias, self.max_results]):
            kept = self.max_results - self.max_results // 10
            self._write("prune", [self.alias, self.alias, kept])
            self._write("recount", [self.alias, self.alias])

    def save_retrying(self, result: TaskResult[..., Any]) -> None:
        """A failed attempt's result, READY again: the row waits for its next
        attempt, at ``result.task.run_after``.

        Written as a READY row that no worker has (``dispatched`` false): if
        this process is lost before the next attempt starts, another one
        claims the row and runs that attempt, at that time, as it claims any
        task that never started. Conditional on owning the row: one that
        another process took over (or a task cancelled from elsewhere) is
        not written over, and its next start here is refused (``NotOwned``).
        """
        values = [
            READY,
            [asdict(error) for error in result.errors],
            result.worker_ids,
            result.started_at,
            result.last_attempted_at,
            result.task.run_after,
            metadata_of(result),
            False,
        ]
        where = [result.id, self.alias, self.lease_id, RUNNING, READY]
        updated = self._write("retry", [*values, *where])
        if not updated:
            logger.warning(
                "%s: its retry was not recorded, since %s",
                result.id,
                self._not_owned(result.id),
            )

    def save_metadata(self, result_id: str, metadata: dict[str, Any]) -> None:
        """A running task saved its metadata: written if the row is still this
        process's, and RUNNING (a late save, once the task ended or was
        taken over, changes nothing)."""
        self._write(
            "metadata", [metadata, result_id, self.alias, self.lease_id, RUNNING]
        )

    def cancel_elsewhere(
        self, result_id: str, error: Exception
    ) -> tuple[TaskResult[..., Any], bool]:
        """Cancel a task that this process does not hold.

        A READY task that no worker has (``dispatched`` false), whichever
        process owns it, alive or lost, or none: one conditional ``UPDATE``
        makes it FAILED, with ``error`` added to its errors (those of its
        earlier attempts kept). Its owner never starts it then: the start
        (or the hand-off to a worker) is conditional on READY, so it is
        refused there (``NotOwned``), and the owner forgets the task. Returns
        the result and True.

        A finished task is returned as it is, with False. A task RUNNING (or
        handed to a worker) in another process raises CannotCancel: only
        that process can stop it. No row: TaskResultDoesNotExist.
        """
        cancelled = asdict(capture_error(error))
        while True:
            row = self._row(result_id)
            if row.finished_at is not None:
                return _to_result(row), False
            if row.status != READY or row.dispatched:
                raise CannotCancel(
                    f"Task result {result_id} ({row.task_path}) is "
                    f"{'RUNNING' if row.status == RUNNING else 'handed to a worker'} "
                    f"in another process, whose lease is {row.owner!r} (task "
                    f"backend {self.alias!r}): only the process that runs a task "
                    "can stop it, so cancel it from that process. (If that "
                    "process was lost, the task is recorded FAILED with "
                    "ProcessLost within RECOVERY_TIMEOUT.)"
                )
            now = timezone.now()
            with self._writing():
                # Still READY, and with no attempt since the read: its
                # errors are those read. Whoever owns it.
                updated = (
                    self._rows()
                    .filter(
                        id=result_id,
                        status=READY,
                        dispatched=False,
                        last_attempted_at=row.last_attempted_at,
                    )
                    .update(
                        status=FAILED,
                        finished_at=now,
                        errors=[*row.errors, cancelled],
                    )
                )
            if updated:
                self._prune()
                return _to_result(self._row(result_id)), True
            # It started, was retried, or went meanwhile: look again.

    def save_given_up(self, result_ids: list[str]) -> None:
        with self._writing():
            self._rows().filter(
                id__in=result_ids, owner=self.lease_id, status=READY
            ).update(owner=NOBODY, dispatched=False)

    def save_rolled_back(self, result_id: str) -> None:
        # Held (its enqueue's transaction was on another database): READY, or
        # cancelled from another process meanwhile; either way it never was.
        with self._writing():
            self._owned(result_id).filter(Q(status=READY) | Q(held=True)).delete()

    def _execute(self, connection: Any, statement: str, values: Iterable[Any]) -> int:
        """Run one of ``_statements`` on ``connection``, with ``values``: the
        rows a write changed, or the one number a ``SELECT`` reads.

        In SQL of its own, not the ORM's: a task's life writes three times,
        and building each query would cost more than running it. Each value
        is adapted as its field would (``get_db_prep_save()``), by the
        connection's own adapter, without the field's layers around it; only
        the JSON and date values need it, and an empty list or dict (most of
        a new row's JSON) was adapted once for all.
        """
        vendor = _vendor(connection)
        found = vendor.statements[statement]
        params = list(values)
        ops = connection.ops
        empty_json = vendor.empty_json
        for at in found.json_at:
            value = params[at]
            if value is not None:  # None is NULL to every field.
                kind = type(value)
                params[at] = (
                    empty_json[kind]
                    if kind in empty_json and not value
                    else ops.adapt_json_value(value, None)
                )
        for at in found.datetime_at:
            if params[at] is not None:
                params[at] = ops.adapt_datetimefield_value(params[at])
        if connection is self._private.connection:
            # This thread's own connection (_private_connection): straight to
            # the driver, with its "?" placeholders, past Django's cursor
            # wrapper, which rewrites the SQL at each call.
            if connection.connection is None:
                connection.ensure_connection()
            with connection.wrap_database_errors:
                return _outcome(connection.connection.execute(found.qmark_sql, params))
        with connection.cursor() as cursor:
            cursor.execute(found.sql, params)
            return _outcome(cursor)

    def _not_owned(self, result_id: str) -> str:
        return (
            f"task result {result_id} is no longer owned by this process "
            f"({self.lease_id}): its lease expired, and another process took the "
            "task over, or another process cancelled it."
        )

    # -- reading -----------------------------------------------------------

    def load(self, result_id: str) -> TaskResult[..., Any]:
        return _to_result(self._row(result_id))

    def _row(self, result_id: str) -> StoredResult:
        # A longer id was never issued: no query for it.
        row: StoredResult | None = (
            self._rows().filter(id=result_id).first()
            if len(result_id) <= ID_LENGTH
            else None
        )
        if row is None:
            raise TaskResultDoesNotExist(
                f"{shown(result_id)}: no such task result in the database store of "
                f"task backend {self.alias!r} (database {self.database!r}). "
                "Finished results are kept until MAX_RESULTS newer finished ones "
                "push them out."
            )
        return row


# How a statement's parameter is adapted for the database: as JSON, as a
# date and time, or (None) taken as it is (strings, numbers, booleans).
_JSON = "json"
_DATETIME = "datetime"


@dataclass(frozen=True, slots=True)
class _Statement:
    """One statement of a task's life, in one vendor's SQL."""

    sql: str  # With Django's "%s" placeholders.
    qmark_sql: str  # With SQLite's own "?", for its driver.
    # Where the values adapted as JSON, and as dates and times, are; the
    # others (strings, numbers, booleans) go to the driver as they are.
    json_at: tuple[int, ...]
    datetime_at: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Vendor:
    """The statements of a task's life for one vendor, with the adapted
    form of an empty list and of an empty dict (the JSON adapters depend on
    the vendor alone: the model's JSON fields have no encoder)."""

    statements: dict[str, _Statement]
    empty_json: dict[type, Any]


_vendors: dict[str, _Vendor] = {}


def _vendor(connection: Any) -> _Vendor:
    found = _vendors.get(connection.vendor)
    if found is None:
        found = _vendors[connection.vendor] = _Vendor(
            _statements(connection),
            {
                list: connection.ops.adapt_json_value([], None),
                dict: connection.ops.adapt_json_value({}, None),
            },
        )
    return found


def _statements(connection: Any) -> dict[str, _Statement]:
    quote = connection.ops.quote_name
    meta = StoredResult._meta
    table = str(quote(meta.db_table))

    def kind(name: str) -> str | None:
        found = meta.get_field(name)
        if isinstance(found, JSONField):
            # Adapted with no encoder (_execute): the model's JSON fields have none.
            assert found.encoder is None
            return _JSON
        return _DATETIME if isinstance(found, DateTimeField) else None

    def column(name: str) -> str:
        return str(quote(meta.get_field(name).column))  # type: ignore[union-attr]

    def assignments(names: list[str]) -> str:
        return ", ".join(f"{column(name)} = %s" for name in names)

    owned = (
        f"{column('id')} = %s AND {column('backend')} = %s AND {column('owner')} = %s"
    )
    owned_kinds: list[str | None] = [kind("id"), kind("backend"), kind("owner")]
    started = ["status", "started_at", "last_attempted_at", "worker_ids", "dispatched"]
    finished = [
        "status",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "return_value",
        "errors",
        "worker_ids",
        "dispatched",
        "metadata",
    ]
    retried = [
        "status",
        "errors",
        "worker_ids",
        "started_at",
        "last_attempted_at",
        "run_after",
        "metadata",
        "dispatched",
    ]
    inserted = [f.name for f in meta.concrete_fields]
    status, backend, finished_at = (
        column("status"),
        column("backend"),
        column("finished_at"),
    )
    # The finish time of one of the alias's finished rows, newest first.
    newest = (
        f"SELECT {finished_at} FROM {table} WHERE {backend} = %s "
        f"AND {finished_at} IS NOT NULL ORDER BY {finished_at} DESC LIMIT 1"
    )
    counts = str(quote(FinishedCount._meta.db_table))
    count_backend = str(quote(FinishedCount._meta.get_field("backend").column))
    count = str(quote(FinishedCount._meta.get_field("finished").column))
    statements: dict[str, tuple[str, list[str | None]]] = {
        "insert": (
            f"INSERT INTO {table} ({', '.join(column(name) for name in inserted)}) "
            f"VALUES ({', '.join(['%s'] * len(inserted))})",
            [kind(name) for name in inserted],
        ),
        "dispatch": (
            f"UPDATE {table} SET {assignments(['dispatched'])} "
            f"WHERE {owned} AND {status} = %s",
            [kind("dispatched"), *owned_kinds, None],
        ),
        "start": (
            f"UPDATE {table} SET {assignments(started)} WHERE {owned} AND {status} = %s",
            [*(kind(name) for name in started), *owned_kinds, None],
        ),
        "finish": (
            f"UPDATE {table} SET {assignments(finished)} "
            f"WHERE {owned} AND {status} IN (%s, %s)",
            [*(kind(name) for name in finished), *owned_kinds, None, None],
        ),
        "retry": (
            f"UPDATE {table} SET {assignments(retried)} "
            f"WHERE {owned} AND {status} IN (%s, %s)",
            [*(kind(name) for name in retried), *owned_kinds, None, None],
        ),
        "metadata": (
            f"UPDATE {table} SET {assignments(['metadata'])} "
            f"WHERE {owned} AND {status} = %s",
            [kind("metadata"), *owned_kinds, None],
        ),
        # 1 if the alias has more finished rows than the bound, else 0.
        "past_bound": (
            f"SELECT COALESCE((SELECT {count} FROM {counts} "
            f"WHERE {count_backend} = %s), 0) > %s",
            [None, None],
        ),
        # The rows from the cutoff (the OFFSET) on go; ties at the cutoff
        # too: one row early. (With no row there, the cutoff is NULL: none go.)
        "prune": (
            f"DELETE FROM {table} WHERE {backend} = %s AND {finished_at} <= ("
            f"{newest} OFFSET %s)",
            [None, None, None],
        ),
        # The alias's count, from its rows. (On PostgreSQL, a row that
        # another transaction finishes meanwhile may be missed, and found
        # at the next recount.)
        "recount": (
            f"UPDATE {counts} SET {count} = (SELECT COUNT(*) FROM {table} "
            f"WHERE {backend} = %s AND {finished_at} IS NOT NULL) "
            f"WHERE {count_backend} = %s",
            [None, None],
        ),
    }
    return {
        name: _Statement(
            sql,
            sql.replace("%s", "?"),  # None of ours holds another "%".
            tuple(at for at, found in enumerate(kinds) if found is _JSON),
            tuple(at for at, found in enumerate(kinds) if found is _DATETIME),
        )
        for name, (sql, kinds) in statements.items()
    }


def _outcome(cursor: Any) -> int:
    """What a statement's cursor tells: the number a query read, or the rows
    a write changed (a write has no ``description``)."""
    if cursor.description is None:
        return int(cursor.rowcount)
    return int(cursor.fetchone()[0])


def _to_result(row: StoredResult) -> TaskResult[..., Any]:
    reference = TaskReference(
        module_path=row.task_path,
        priority=row.priority,
        queue_name=row.queue_name,
        backend=row.backend,
        run_after=row.run_after,
        takes_context=row.takes_context,
    )
    return new_result(
        task=reference.resolve(),
        id=row.id,
        status=TaskResultStatus(row.status),
        enqueued_at=row.enqueued_at,
        started_at=row.started_at,
        last_attempted_at=row.last_attempted_at,
        finished_at=row.finished_at,
        args=row.args,
        kwargs=row.kwargs,
        backend=row.backend,
        errors=[TaskError(**error) for error in row.errors],
        worker_ids=list(row.worker_ids),
        _return_value=row.return_value,
        metadata=row.metadata,
    )

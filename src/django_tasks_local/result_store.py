"""The result store interface, and the memory store that is its default.

A store has two sides. Its table (``add``, ``get``, ``finished``,
``discard``) is a plain data structure: the results this process owns,
which the runtime holds its lock around and changes in place, handing
callers copies. Its ``save_*`` side records each step of a task's life
where other processes can see it: the runtime calls it outside its lock,
and the memory store has nothing to do there. ``database_store`` is the
other store.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from django.tasks import TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist


def shown(result_id: str) -> str:
    """A result id as an error message shows it: a long one cut short."""
    if len(result_id) <= 64:
        return result_id
    return f"{result_id[:64]}... ({len(result_id)} characters)"


def _missing(result_id: str) -> str:
    """Why a result id is not here, saying what a user can act on."""
    return (
        f"{shown(result_id)}: no such task result in this process (pid {os.getpid()}). "
        "Results are kept in the memory of the process that enqueued the "
        "task, until MAX_RESULTS newer finished ones push them out."
    )


#: What a shared store hands the runtime it takes tasks over for: the READY
#: results it now owns, the results it failed because their process was
#: lost, and those it made READY again instead, for their next attempt.
Adopt = Callable[
    [
        list["TaskResult[..., Any]"],
        list["TaskResult[..., Any]"],
        list["TaskResult[..., Any]"],
    ],
    None,
]


class ResultStore:
    """Results by id; finished ones beyond ``max_results`` are evicted oldest first.

    READY and RUNNING results are never evicted: they leave only by finishing
    (and then ageing out) or by ``discard``. This is the memory store: its
    results live and die with the process, so its ``save_*`` methods do
    nothing.
    """

    #: Whether other processes read (and may take over) these results: then
    #: a result not in the table may still be in the store (``load``), and
    #: unstarted tasks outlive a shutdown.
    shared: ClassVar[bool] = False
    #: The database whose transaction an enqueue's row is written in, if any.
    database: str | None = None

    def __init__(self, max_results: int) -> None:
        self.max_results = max_results
        self._results: dict[str, TaskResult[..., Any]] = {}
        # Ids of finished results, oldest first: the eviction order.
        self._finished: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._results)

    @property
    def finished_count(self) -> int:
        return len(self._finished)

    @property
    def unfinished_count(self) -> int:
        return len(self._results) - len(self._finished)

    def add(self, result: TaskResult[..., Any]) -> None:
        self._results[result.id] = result

    def get(self, result_id: str) -> TaskResult[..., Any]:
        """The stored result itself, for the owner to change."""
        try:
            return self._results[result_id]
        except KeyError:
            raise TaskResultDoesNotExist(_missing(result_id)) from None

    def __contains__(self, result_id: object) -> bool:
        return result_id in self._results

    def discard(self, result_id: str) -> None:
        """Forget an unfinished result (a rolled-back enqueue)."""
        self._results.pop(result_id, None)

    def finished(self, result_id: str) -> None:
        """Record that a result finished, and evict what is now over the bound."""
        self._finished.append(result_id)
        while len(self._finished) > self.max_results:
            del self._results[self._finished.popleft()]

    # -- where other processes see results (outside the runtime's lock) --

    def open(self, adopt: Adopt) -> None:
        """Start taking part: for a shared store, hold a lease and take over lost tasks."""

    def close(self) -> None:
        """Stop taking part: this process's unfinished tasks go to others."""

    def save_enqueued(self, result: TaskResult[..., Any], *, held: bool) -> None:
        """Record a READY result (``held``: its transaction is still open elsewhere)."""

    def save_committed(self, result_id: str) -> None:
        """The held enqueue's transaction committed: the task may run."""

    def save_dispatched(self, result_id: str) -> None:
        """The task goes to a worker that reports its start late, if ever.

        Raises NotOwned if this process may not run it.
        """

    def save_started(
        self, result_id: str, worker_ids: list[str], started_at: datetime
    ) -> None:
        """The task body starts now (raises NotOwned if this process may not run it)."""

    def save_finished(self, result: TaskResult[..., Any]) -> None:
        """Record a final result."""

    def save_retrying(self, result: TaskResult[..., Any]) -> None:
        """A failed attempt's result, READY again: its next attempt starts at
        its task's ``run_after``."""

    def save_metadata(self, result_id: str, metadata: dict[str, Any]) -> None:
        """A running task saved its metadata."""

    def cancel_elsewhere(
        self, result_id: str, error: Exception
    ) -> tuple[TaskResult[..., Any], bool]:
        """Cancel a task this process does not hold (a READY one of another's).

        Returns the result, and whether this call cancelled it (FAILED with
        ``error`` now; False: it had finished already, and is as it was).
        Raises CannotCancel if another process runs it, TaskResultDoesNotExist
        if there is none.
        """
        raise TaskResultDoesNotExist(_missing(result_id))

    def save_given_up(self, result_ids: list[str]) -> None:
        """These tasks never started here: left READY for another process."""

    def save_rolled_back(self, result_id: str) -> None:
        """The enqueue was rolled back: no trace of it may remain."""

    def load(self, result_id: str) -> TaskResult[..., Any]:
        """A result this process does not hold, from where others record it."""
        raise TaskResultDoesNotExist(_missing(result_id))

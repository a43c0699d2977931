"""The task state machine: the allowed transitions and the one function that applies them.

Nothing else in the package writes ``TaskResult.status``.
"""

from __future__ import annotations

from typing import Any

from django.tasks import TaskResult, TaskResultStatus

from .exceptions import InvalidTransition

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED

# READY -> FAILED covers a task that could not start at all (its worker died
# first, the backend closed, it was cancelled); RUNNING -> READY a failed
# attempt that will be retried; the other edges are the ordinary life.
ALLOWED_TRANSITIONS: dict[TaskResultStatus, frozenset[TaskResultStatus]] = {
    READY: frozenset({RUNNING, FAILED}),
    RUNNING: frozenset({READY, SUCCESSFUL, FAILED}),
    SUCCESSFUL: frozenset(),
    FAILED: frozenset(),
}


def transition(
    result: TaskResult[..., Any], status: TaskResultStatus, **changes: Any
) -> None:
    """Move ``result`` to ``status``, setting ``changes`` on it in the same step.

    TaskResult is a frozen dataclass; the store owns its results, so it is the
    only writer, and it writes through here.
    """
    if status not in ALLOWED_TRANSITIONS[result.status]:
        raise InvalidTransition(
            f"Task result {result.id} cannot go from {result.status} to {status}."
        )
    for name, value in changes.items():
        object.__setattr__(result, name, value)
    object.__setattr__(result, "status", status)

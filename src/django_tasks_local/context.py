"""The ContextVar through which a running task finds its own result id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The id of the TaskResult of the task running in this context. Outside a
#: task, ``current_result_id.get()`` raises LookupError.
current_result_id: ContextVar[str] = ContextVar("django_tasks_local.current_result_id")


@contextmanager
def bound_result_id(result_id: str) -> Iterator[None]:
    """Bind current_result_id for the duration of one task, then restore it."""
    token = current_result_id.set(result_id)
    try:
        yield
    finally:
        current_result_id.reset(token)

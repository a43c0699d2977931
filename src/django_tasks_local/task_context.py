"""``LocalTaskContext``: what a task that takes a context gets, beyond Django's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.tasks import TaskContext

from .results import normalize_metadata


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTaskContext(TaskContext):  # type: ignore[type-arg, misc]
    """Django's ``TaskContext``, with the result's metadata and cancellation.

    ``attempt`` (Django's) counts this attempt: 1 for the first, 2 for the
    first retry...
    """

    # Saves a copy of the metadata where the backend keeps the result.
    saver: Callable[[dict[str, Any]], None]
    # Whether this attempt was cancelled, or ran past its timeout.
    cancelled: Callable[[], bool]

    @property
    def metadata(self) -> dict[str, Any]:
        """The result's metadata, for the task to read and change.

        What it holds when the task ends is saved with its end; call
        ``save_metadata()`` to have it read before then (progress).
        """
        return self.task_result.metadata  # type: ignore[attr-defined, no-any-return]

    def save_metadata(self) -> None:
        """Save ``metadata`` now: readable by ``get_result()`` within moments.

        Raises TypeError or ValueError, naming the key, for metadata that
        is not JSON (a dict with str keys).
        """
        self.saver(normalize_metadata(self.metadata, "context.metadata"))

    async def asave_metadata(self) -> None:
        """``save_metadata()``, for an async task."""
        await sync_to_async(self.save_metadata, thread_sensitive=False)()

    @property
    def is_cancelled(self) -> bool:
        """Whether this attempt was cancelled (``backend.cancel()``) or ran
        past its timeout, in a thread that could not be stopped: the task
        should stop soon, since its result is final already."""
        return self.cancelled()

"""The in-memory result store.

It is a plain data structure: the runtime that owns it holds its lock around
every call. Callers outside get copies (``snapshot``), never a stored result.
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields
from datetime import datetime
from typing import Any

from django.tasks import Task, TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils.json import normalize_json

from .states import READY

_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """Copy JSON-normalized data: only lists and dicts are mutable in it."""
    # Scalars are taken as they are, without a call each: arguments are
    # copied twice per enqueue, and they are mostly a few scalars.
    if type(value) is list:
        return [v if type(v) in _JSON_SCALARS else copy_json(v) for v in value]
    if type(value) is dict:
        return {
            k: v if type(v) in _JSON_SCALARS else copy_json(v) for k, v in value.items()
        }
    return value


# Writes a field of a frozen dataclass (bound once: the lookup is half the cost).
_set_field = object.__setattr__

_FIELDS = tuple(f.name for f in fields(TaskResult))
# The fields a snapshot shares with the stored result: immutable values.
_SHARED_FIELDS = tuple(
    name
    for name in _FIELDS
    if name not in {"args", "kwargs", "errors", "worker_ids", "_return_value"}
)


def snapshot(result: TaskResult[..., Any]) -> TaskResult[..., Any]:
    """A copy of ``result`` that shares nothing mutable with it."""
    # Field by field: copy.copy() of a slotted dataclass goes through
    # __reduce_ex__ and dataclasses.fields(), several times slower, and a
    # task's life takes three snapshots.
    clone = object.__new__(TaskResult)
    for name in _SHARED_FIELDS:
        _set_field(clone, name, getattr(result, name))
    _set_field(clone, "args", copy_json(result.args))
    _set_field(clone, "kwargs", copy_json(result.kwargs))
    _set_field(clone, "errors", list(result.errors))
    _set_field(clone, "worker_ids", list(result.worker_ids))
    return_value = result._return_value  # type: ignore[attr-defined]
    _set_field(clone, "_return_value", copy_json(return_value))
    return clone


def normalize(value: Any) -> Any:
    """``normalize_json(value)``, at once for scalars and flat lists and dicts.

    Django's normalize_json tests every value against collections.abc
    classes, which costs more than the rest of an enqueue; the arguments of
    most tasks are a few scalars.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    if (kind is list or kind is tuple) and all(type(v) in _JSON_SCALARS for v in value):
        return list(value)
    if kind is dict and all(
        type(k) is str and type(v) in _JSON_SCALARS for k, v in value.items()
    ):
        return dict(value)
    return normalize_json(value)


def new_result(**values: Any) -> TaskResult[..., Any]:
    """``TaskResult(**values)``, its args and kwargs normalized by ``normalize``."""
    values = {"_return_value": None, **values}
    result = object.__new__(TaskResult)
    for name in _FIELDS:
        _set_field(result, name, values[name])
    _set_field(result, "args", normalize(values["args"]))
    _set_field(result, "kwargs", normalize(values["kwargs"]))
    return result


def ready_result(
    task: Task[..., Any],
    result_id: str,
    alias: str,
    args: Any,
    kwargs: Any,
    enqueued_at: datetime | None,
) -> TaskResult[..., Any]:
    """A newly enqueued task's result: READY, never attempted."""
    return new_result(
        task=task,
        id=result_id,
        status=READY,
        enqueued_at=enqueued_at,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[],
        worker_ids=[],
    )


class ResultStore:
    """Results by id; finished ones beyond ``max_results`` are evicted oldest first.

    READY and RUNNING results are never evicted: they leave only by finishing
    (and then ageing out) or by ``discard``.
    """

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
            raise TaskResultDoesNotExist(result_id) from None

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

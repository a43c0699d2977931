"""``TaskResult`` helpers: building results, copying them, normalizing JSON.

Callers outside the runtime get copies (``snapshot``), never a stored result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from django.tasks import Task, TaskResult
from django.tasks.base import TASK_REFRESH_ATTRS

from .exceptions import InvalidTaskArguments
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


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTaskResult(TaskResult):  # type: ignore[type-arg, misc]
    """Django's ``TaskResult``, with the task's ``metadata``.

    ``metadata`` is a JSON dict: given at enqueue (``task.using(metadata=...)``),
    saved by the running task (``context.save_metadata()``), and kept with
    the result. As Django proposes it (django/new-features#141).
    """

    metadata: dict[str, Any] = field(default_factory=dict)

    def refresh(self) -> None:
        """Reload the result from the backend, its metadata too."""
        fresh = self.task.get_backend().get_result(self.id)
        _copy_refreshed(fresh, self)

    async def arefresh(self) -> None:
        fresh = await self.task.get_backend().aget_result(self.id)
        _copy_refreshed(fresh, self)


def _copy_refreshed(fresh: TaskResult[..., Any], result: TaskResult[..., Any]) -> None:
    for name in (*TASK_REFRESH_ATTRS, "metadata"):
        _set_field(result, name, getattr(fresh, name, {}))


def metadata_of(result: TaskResult[..., Any]) -> dict[str, Any]:
    """The result's metadata (a result of another backend's making has none)."""
    return getattr(result, "metadata", {})


_FIELDS = tuple(f.name for f in fields(LocalTaskResult))
# The fields a snapshot shares with the stored result: immutable values.
_SHARED_FIELDS = tuple(
    name
    for name in _FIELDS
    if name
    not in {"args", "kwargs", "errors", "worker_ids", "_return_value", "metadata"}
)


def snapshot(result: TaskResult[..., Any]) -> LocalTaskResult:
    """A copy of ``result`` that shares nothing mutable with it."""
    # Field by field: copy.copy() of a slotted dataclass goes through
    # __reduce_ex__ and dataclasses.fields(), several times slower, and a
    # task's life takes three snapshots.
    clone = object.__new__(LocalTaskResult)
    for name in _SHARED_FIELDS:
        _set_field(clone, name, getattr(result, name))
    _set_field(clone, "args", copy_json(result.args))
    _set_field(clone, "kwargs", copy_json(result.kwargs))
    _set_field(clone, "errors", list(result.errors))
    _set_field(clone, "worker_ids", list(result.worker_ids))
    return_value = result._return_value  # type: ignore[attr-defined]
    _set_field(clone, "_return_value", copy_json(return_value))
    _set_field(clone, "metadata", copy_json(metadata_of(result)))
    return clone


def normalize(value: Any, what: str = "the value") -> Any:
    """Django's ``normalize_json(value)``, but plain types out, and errors that say where.

    At once for scalars and flat lists and dicts: Django's normalize_json
    tests every value against collections.abc classes, which costs more than
    the rest of an enqueue, and the arguments of most tasks are a few
    scalars. A subclass of str, int or float (an enum member) comes out as the
    plain type, so that only plain data crosses to another process. Raises
    TypeError or ValueError, as Django does, naming where in ``what`` the
    problem lies.
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
    return _normalize(value, what, 0)


# Deeper than this, a value is refused: Python's recursion limit (1000) would
# stop Django's own JSON handling with a bare RecursionError.
MAX_DEPTH = 200


def _normalize(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        shown = where if len(where) <= 60 else f"{where[:60]}..."
        raise ValueError(f"{shown} is nested more than {MAX_DEPTH} levels deep.")
    match value:
        case None | bool():
            return value
        case int():
            return int.__int__(value)
        case float():
            return float.__float__(value)
        case str():
            return str.__str__(value)
        case Mapping():
            normalized = {}
            for key, item in value.items():
                plain_key = _normalize(key, f"a key of {where}", depth + 1)
                if type(plain_key) not in _JSON_SCALARS:
                    raise TypeError(
                        f"{where} has a key of {type(key)}: keys must be str, "
                        "int, float, bool or None."
                    )
                normalized[plain_key] = _normalize(item, f"{where}[{key!r}]", depth + 1)
            return normalized
        case bytes():
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    f"{where} is bytes that are not UTF-8 text "
                    f"(Unsupported value: {type(value)})."
                ) from None
        case Sequence():
            return [
                _normalize(item, f"{where}[{index}]", depth + 1)
                for index, item in enumerate(value)
            ]
        case _:
            raise TypeError(f"{where} is not JSON: Unsupported type: {type(value)}")


def new_result(**values: Any) -> LocalTaskResult:
    """``LocalTaskResult(**values)``, its args and kwargs normalized by ``normalize``."""
    values = {"_return_value": None, "metadata": {}, **values}
    result = object.__new__(LocalTaskResult)
    for name in _FIELDS:
        _set_field(result, name, values[name])
    _set_field(result, "args", normalize(values["args"], "args"))
    _set_field(result, "kwargs", normalize(values["kwargs"], "kwargs"))
    return result


def normalize_metadata(value: Any, what: str = "metadata") -> dict[str, Any]:
    """``value`` as metadata: a dict with str keys, of JSON values.

    Raises TypeError or ValueError naming what is wrong.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, not {type(value).__name__}.")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{what} has a key {key!r}: its keys must be str.")
    return dict(normalize(dict(value), what))


def ready_result(
    task: Task[..., Any],
    result_id: str,
    alias: str,
    args: Any,
    kwargs: Any,
    enqueued_at: datetime | None,
) -> LocalTaskResult:
    """A newly enqueued task's result: READY, never attempted.

    Raises InvalidTaskArguments for arguments that are not JSON values.
    """
    try:
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
            # Normalized when the task was made (LocalTask.using()).
            metadata=copy_json(getattr(task, "metadata", None) or {}),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidTaskArguments(
            f"The arguments of task {task.module_path!r} must be JSON values "
            f"(dict, list, str, int, float, bool, None): {exc}"
        ) from exc

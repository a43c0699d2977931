"""Serialization policies: how a task and its arguments reach the worker.

A backend names one policy. ``CopySerializer`` is for workers in this process
(threads): the envelope carries the task itself and copies of its arguments,
and the worker reports the task's start by a direct call. ``PickleSerializer``
is for workers in other processes: the task travels by its import path and
its arguments, JSON values of plain types (``results.normalize``), always
pickle.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

from django.tasks import TaskResult

from .results import copy_json, metadata_of
from .runner import Envelope, StartReporter, TaskReference


class Serializer(Protocol):
    """A serialization policy, as the core uses it."""

    def envelope(
        self, result: TaskResult[..., Any], report_started: StartReporter
    ) -> Envelope:
        """The envelope that carries ``result``'s task to a worker."""
        ...


class CopySerializer:
    """For workers in this process: the task itself, and its own copy of the arguments."""

    def envelope(
        self, result: TaskResult[..., Any], report_started: StartReporter
    ) -> Envelope:
        return Envelope(
            result.id,
            result.task,
            # The task gets its own copy: what it does to its arguments must
            # not change the stored result.
            copy_json(result.args),
            copy_json(result.kwargs),
            result.enqueued_at,
            report_started,
            None,
            list(result.worker_ids),
            list(result.errors),
            copy_json(metadata_of(result)),
        )


class PickleSerializer:
    """For workers in other processes: the task by its import path, pickled once."""

    def envelope(
        self, result: TaskResult[..., Any], report_started: StartReporter
    ) -> Envelope:
        reference = TaskReference.from_task(result.task)
        args, kwargs, enqueued_at = result.args, result.kwargs, result.enqueued_at
        earlier = (list(result.worker_ids), list(result.errors), metadata_of(result))
        envelope = Envelope(
            result.id, reference, args, kwargs, enqueued_at, None, None, *earlier
        )
        # Pickled here, once: the pool then sends these bytes as they are.
        pickled = pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)
        return Envelope(
            result.id, reference, args, kwargs, enqueued_at, None, pickled, *earlier
        )

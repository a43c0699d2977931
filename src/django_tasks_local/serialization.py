"""Serialization policies: how a task and its arguments reach the worker.

A backend names one policy. ``InProcessSerializer`` is for executors that run
in this process (threads): nothing is copied across a boundary and the worker
reports the task's start by a direct call. ``PickleSerializer`` is for
executors in other processes: the task travels by its import path and the
arguments must survive pickling, which is checked at ``enqueue()``.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

from django.tasks import Task, TaskResult

from .runner import Envelope, StartReporter, TaskReference
from .store import copy_json


class Serializer(Protocol):
    """A serialization policy, as the core uses it."""

    #: Whether workers run in other processes (and so need the tasks' modules
    #: importable, and Django set up, on their side).
    crosses_processes: bool

    def envelope(
        self, result: TaskResult[..., Any], report_started: StartReporter
    ) -> Envelope:
        """The envelope for ``result``; raise ValueError if it cannot be sent."""
        ...


class InProcessSerializer:
    """For workers that share this process: the envelope carries the task itself."""

    crosses_processes = False

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
        )


class PickleSerializer:
    """For workers in other processes: everything in the envelope must pickle."""

    crosses_processes = True

    def envelope(
        self, result: TaskResult[..., Any], report_started: StartReporter
    ) -> Envelope:
        reference = TaskReference.from_task(result.task)
        args, kwargs, enqueued_at = result.args, result.kwargs, result.enqueued_at
        envelope = Envelope(result.id, reference, args, kwargs, enqueued_at)
        pickled = self.check_picklable(envelope, result.task)
        # Carries the check's pickle, which the pool then sends as it is.
        return Envelope(
            result.id, reference, args, kwargs, enqueued_at, pickled=pickled
        )

    def check_picklable(self, envelope: Envelope, task: Task[..., Any]) -> bytes:
        """The pickled envelope; ValueError if it does not pickle."""
        try:
            return pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ValueError(
                f"The arguments of task {task.module_path!r} cannot be sent to a "
                f"worker process: they must be picklable ({type(exc).__name__}: {exc})."
            ) from exc

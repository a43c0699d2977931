"""Every exception the package raises, or records on a task result.

A leaf: it imports nothing, so the executors may raise these too.
"""

from __future__ import annotations


class BackendClosed(RuntimeError):
    """The interpreter is exiting: the backend takes no more tasks."""


class WaitingLineFull(RuntimeError):
    """MAX_WAITING tasks wait already: the backend takes no more until some start."""


class NotStarted(Exception):
    """Recorded on a task that was dropped before any worker started it."""


class WorkerCrashed(Exception):
    """The worker process running the task died."""


class TaskTimeout(TimeoutError):
    """The task ran past its timeout (``@task(timeout=...)`` or the backend's
    TIMEOUT): its worker process was killed, or its thread abandoned."""


#: The name this exception had before timeouts came to the thread backend.
TaskTimedOut = TaskTimeout


class TaskCancelled(Exception):
    """Recorded on a task cancelled by ``backend.cancel()``: it never started,
    its worker process was killed, or its thread was told (and abandoned)."""


class WorkerError(Exception):
    """A worker process could not start, run a call, or send back its result."""


class RemoteTaskError(Exception):
    """Stands in, while task_finished is sent, for a worker process's exception
    that could not be pickled (the result records its class path)."""


class InvalidTransition(RuntimeError):
    """A state change that the state machine does not allow."""


class InvalidTaskArguments(TypeError, ValueError):
    """A task's arguments are not JSON values, or cannot reach a worker process.

    A TypeError, as Django's own JSON check raises, and a ValueError, as
    django-tasks-local 2.0 documents: either ``except`` catches it.
    """


class ProcessLost(Exception):
    """Recorded on a task whose process stopped renewing its lease while the task
    was running (or handed to a worker): it is never run again on its own."""


class CannotCancel(RuntimeError):
    """``cancel()`` of a task that another process runs (the database store):
    only the process that runs a task can stop it."""


class NotOwned(RuntimeError):
    """This process no longer owns the task in the database store (it was taken
    over while this process could not renew its lease): it must not run it."""

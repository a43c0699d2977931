"""Background task backends for Django's Tasks framework, with no infrastructure.

``ThreadPoolBackend`` runs tasks in threads of the web process,
``ProcessPoolBackend`` in worker processes; both stand on ``ExecutorBackend``,
the core that any ``concurrent.futures.Executor`` can drive.
"""

from .backends.base import ExecutorBackend
from .backends.process import ProcessPoolBackend
from .backends.thread import ThreadPoolBackend
from .context import current_result_id
from .exceptions import (
    BackendClosed,
    CannotCancel,
    InvalidTaskArguments,
    NotStarted,
    ProcessLost,
    TaskCancelled,
    TaskTimedOut,
    TaskTimeout,
    WaitingLineFull,
    WorkerCrashed,
    WorkerError,
)
from .executors.processes import ProcessPool
from .executors.threads import ThreadPool
from .results import LocalTaskResult
from .retries import default_backoff, exponential_backoff
from .runtime import Execution
from .serialization import CopySerializer, PickleSerializer, Serializer
from .signals import task_retrying
from .task_class import LocalTask
from .task_context import LocalTaskContext
from .waiting import await_result, wait

__all__ = [
    "BackendClosed",
    "CannotCancel",
    "CopySerializer",
    "Execution",
    "ExecutorBackend",
    "InvalidTaskArguments",
    "LocalTask",
    "LocalTaskContext",
    "LocalTaskResult",
    "NotStarted",
    "PickleSerializer",
    "ProcessLost",
    "ProcessPool",
    "ProcessPoolBackend",
    "Serializer",
    "TaskCancelled",
    "TaskTimedOut",
    "TaskTimeout",
    "ThreadPool",
    "ThreadPoolBackend",
    "WaitingLineFull",
    "WorkerCrashed",
    "WorkerError",
    "await_result",
    "current_result_id",
    "default_backoff",
    "exponential_backoff",
    "task_retrying",
    "wait",
]

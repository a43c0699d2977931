"""Background task backends for Django's Tasks framework, with no infrastructure.

``ThreadPoolBackend`` runs tasks in threads of the web process,
``ProcessPoolBackend`` in worker processes; both stand on ``ExecutorBackend``,
the core that any ``concurrent.futures.Executor`` can drive.
"""

from .backends.base import ExecutorBackend
from .backends.process import ProcessPoolBackend
from .backends.thread import ThreadPoolBackend
from .context import current_result_id
from .pool import ProcessPool, TaskTimedOut, WorkerCrashed
from .runtime import BackendClosed
from .serialization import InProcessSerializer, PickleSerializer, Serializer
from .waiting import await_result, wait

__all__ = [
    "BackendClosed",
    "ExecutorBackend",
    "InProcessSerializer",
    "PickleSerializer",
    "ProcessPool",
    "ProcessPoolBackend",
    "Serializer",
    "TaskTimedOut",
    "ThreadPoolBackend",
    "WorkerCrashed",
    "await_result",
    "current_result_id",
    "wait",
]

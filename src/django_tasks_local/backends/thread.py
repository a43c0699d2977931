"""ThreadPoolBackend: tasks run in a pool of threads inside this process."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import ClassVar

from ..executors.threads import ThreadPool
from ..runtime import Execution
from ..serialization import CopySerializer, Serializer
from .base import ExecutorBackend


class ThreadPoolBackend(ExecutorBackend):
    """For I/O-bound tasks: threads share the process, its memory and its GIL."""

    serializer: ClassVar[Serializer] = CopySerializer()
    execution: ClassVar[Execution] = Execution.WORKER_LOOP
    # As ThreadPoolExecutor: I/O-bound work wants more threads than cores.
    default_max_workers: ClassVar[int] = min(32, (os.cpu_count() or 1) + 4)

    def create_executor(self) -> Executor:
        return ThreadPool(
            self.settings["MAX_WORKERS"],
            thread_name_prefix=f"django-tasks-local-{self.alias}",
        )

"""ProcessPoolBackend: tasks run in worker processes, for CPU-bound work."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor
from typing import ClassVar

from django.core import checks

from ..executors.processes import ProcessPool
from ..options import (
    Option,
    combination_error,
    one_of,
    optional_positive_int,
    optional_positive_number,
)
from ..runtime import Execution
from ..serialization import PickleSerializer, Serializer
from . import worker_process
from .base import ExecutorBackend


class ProcessPoolBackend(ExecutorBackend):
    """For CPU-bound tasks: each worker is a process with its own interpreter."""

    serializer: ClassVar[Serializer] = PickleSerializer()
    execution: ClassVar[Execution] = Execution.CALL_PER_TASK

    declared_options: ClassVar[dict[str, Option]] = {
        **ExecutorBackend.declared_options,
        "MP_CONTEXT": Option(
            # spawn: a child starts clean (no copy of the web process's threads,
            # locks or database sockets) on every platform alike.
            default="spawn",
            validate=one_of(*multiprocessing.get_all_start_methods()),
            help="How worker processes start: 'spawn', 'forkserver' or 'fork'.",
        ),
        "MAX_TASKS_PER_CHILD": Option(
            default=None,
            validate=optional_positive_int,
            help="Replace a worker process after it has run this many tasks.",
        ),
        "WORKER_START_TIMEOUT": Option(
            # A worker starts in about half a second (django.setup() on a
            # fresh interpreter); a minute covers a big project starting many
            # workers at once on a loaded machine, and still ends a hung start.
            default=60.0,
            validate=optional_positive_number,
            help=(
                "Seconds a worker process may take to start (set Django up) "
                "before it is killed and the tasks waiting for it fail; None "
                "for no limit."
            ),
        ),
    }

    def check_option_combinations(self) -> list[checks.CheckMessage]:
        if (
            self.settings["MAX_TASKS_PER_CHILD"] is not None
            and self.settings["MP_CONTEXT"] == "fork"
        ):
            return [
                combination_error(
                    self.alias,
                    "MAX_TASKS_PER_CHILD cannot be combined with MP_CONTEXT 'fork'.",
                    "Use MP_CONTEXT 'spawn' or 'forkserver', as concurrent.futures requires.",
                )
            ]
        return []

    def create_executor(self) -> Executor:
        return ProcessPool(
            self.settings["MAX_WORKERS"],
            mp_context=self.settings["MP_CONTEXT"],
            initializer=worker_process.set_up,
            on_started=self.runtime.relay_started,
            handle_request=worker_process.answer,
            max_tasks_per_child=self.settings["MAX_TASKS_PER_CHILD"],
            start_timeout=self.settings["WORKER_START_TIMEOUT"],
        )

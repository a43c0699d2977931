"""Backends on executors this package does not ship: loky, and a Dask cluster.

docs/custom-executors.md shows the two sections between the ``--8<--`` markers,
each with the imports it adds (hence E402 here), and
tests/test_custom_executors.py runs them. loky and distributed are dev
extras, never runtime dependencies.
"""

# --8<-- [start:loky]
import os
from concurrent.futures import Executor

import django
from loky import get_reusable_executor

from django_tasks_local import ExecutorBackend, PickleSerializer


class LokyBackend(ExecutorBackend):
    """Runs tasks in loky's reusable pool of worker processes."""

    serializer = PickleSerializer()

    def create_executor(self) -> Executor:
        return get_reusable_executor(
            max_workers=self.settings["MAX_WORKERS"],
            # A loky worker is a fresh interpreter: it sets Django up first.
            env={"DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]},
            initializer=django.setup,
        )


# --8<-- [end:loky]


# --8<-- [start:dask]
from typing import Any

from distributed import Client, WorkerPlugin
from distributed.cfexecutor import ClientExecutor

from django_tasks_local.options import Option


class DjangoSetup(WorkerPlugin):
    """Sets Django up on every Dask worker, including those that join later."""

    def __init__(self, settings_module: str) -> None:
        self.settings_module = settings_module

    def setup(self, worker: Any) -> None:
        os.environ["DJANGO_SETTINGS_MODULE"] = self.settings_module
        django.setup()


def scheduler_address(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        return f"must be an address such as 'tcp://10.0.0.5:8786', not {value!r}"
    return None


class DaskExecutor(ClientExecutor):
    """Dask's executor on a client of its own, which shutdown() closes."""

    def __init__(self, address: str | None) -> None:
        self.client = Client(address, set_as_default=False)
        self.client.register_plugin(DjangoSetup(os.environ["DJANGO_SETTINGS_MODULE"]))
        # pure=False: tasks have side effects; Dask must never reuse a result.
        super().__init__(self.client, pure=False)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        # Dask's shutdown(wait=False) cancels every unfinished task anyway.
        super().shutdown(wait)
        self.client.close()


class DaskBackend(ExecutorBackend):
    """Runs tasks on a Dask cluster, on however many machines it spans."""

    serializer = PickleSerializer()
    declared_options = {
        **ExecutorBackend.declared_options,
        "SCHEDULER": Option(
            default=None,
            validate=scheduler_address,
            help="The Dask scheduler's address; None starts a cluster on this machine.",
        ),
    }

    def create_executor(self) -> Executor:
        return DaskExecutor(self.settings["SCHEDULER"])


# --8<-- [end:dask]

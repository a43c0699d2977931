"""How a task and its arguments reach a worker, and what cannot make the trip."""

from __future__ import annotations

import pickle
from datetime import datetime

import pytest
from django.conf import settings
from django.tasks import TaskResult, TaskResultStatus, task_backends
from django.test import override_settings
from django.utils import timezone

from django_tasks_local.runner import Envelope, TaskReference
from django_tasks_local.serialization import CopySerializer, PickleSerializer
from tests import tasks
from tests.helpers import CUSTOM_ALIASES, DEADLINE, SignalLog

PROCESS_ALIASES = ["processes", "custom_processes"]


def local_label(text: str) -> str:
    """A str subclass survives JSON normalization; defined locally, it cannot pickle."""

    class LocalLabel(str):
        pass

    return LocalLabel(text)


def new_result(task, args, kwargs) -> TaskResult:
    return TaskResult(
        task=task,
        id="result-id",
        status=TaskResultStatus.READY,
        enqueued_at=timezone.now(),
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend="default",
        errors=[],
        worker_ids=[],
    )


def report_started(result_id: str, worker_id: str, started_at: datetime) -> None:
    pass


def sent_for(signals: SignalLog, task) -> list:
    """The signals sent for results of ``task`` (other tests' stragglers aside)."""
    return [
        entry
        for entries in signals.by_id.values()
        for entry in entries
        if entry[2].task.func is task.func
    ]


@pytest.fixture
def with_custom_aliases():
    with override_settings(TASKS={**settings.TASKS, **CUSTOM_ALIASES}):
        yield


# -- the policies ------------------------------------------------------------------


def test_in_process_envelopes_carry_the_task_and_a_copy_of_the_arguments():
    result = new_result(tasks.argument_types, [[1]], {"key": {"a": [2]}})

    envelope = CopySerializer().envelope(result, report_started)
    envelope.args[0].append("changed")
    envelope.kwargs["key"]["a"].append("changed")

    assert envelope.task is tasks.argument_types
    assert envelope.report_started is report_started
    assert (envelope.result_id, envelope.enqueued_at) == (result.id, result.enqueued_at)
    assert (result.args, result.kwargs) == ([[1]], {"key": {"a": [2]}})


def test_pickled_envelopes_carry_the_task_by_path():
    task = tasks.context_of_task.using(priority=5, queue_name="default")
    result = new_result(task, ["value"], {})

    envelope = PickleSerializer().envelope(result, report_started)
    received: Envelope = pickle.loads(pickle.dumps(envelope))

    assert envelope.report_started is None
    assert received.task == TaskReference.from_task(task)
    assert received.task.module_path == "tests.tasks.context_of_task"
    rebuilt = received.task.resolve()
    assert rebuilt.func is task.func
    assert (rebuilt.priority, rebuilt.takes_context) == (5, True)
    assert (received.args, received.kwargs) == (["value"], {})


# -- through the backends ------------------------------------------------------------


@pytest.mark.parametrize("value", [object(), timezone.now(), {1, 2}])
def test_arguments_that_are_not_json_are_a_type_error(alias, value):
    with SignalLog() as signals:
        with pytest.raises(TypeError, match="Unsupported type"):
            tasks.argument_types.using(backend=alias).enqueue(value)
        with pytest.raises(TypeError, match="Unsupported type"):
            tasks.argument_types.using(backend=alias).enqueue(key=value)

    assert sent_for(signals, tasks.argument_types) == []


@pytest.mark.usefixtures("with_custom_aliases")
@pytest.mark.parametrize("alias", ["threads", *PROCESS_ALIASES])
def test_a_str_subclass_argument_reaches_the_task_as_a_plain_str(alias):
    # Its class is local: it could not be pickled to a worker process. As in
    # a persistent backend's JSON, the task gets the plain value, everywhere.
    result = tasks.argument_types.using(backend=alias).enqueue(
        local_label("x"), key=local_label("y")
    )
    result = task_backends[alias].wait_for_result(result.id, timeout=DEADLINE)

    assert result.return_value == {"args": ["str"], "kwargs": {"key": "str"}}


@pytest.mark.usefixtures("with_custom_aliases")
@pytest.mark.parametrize("alias", ["threads", *PROCESS_ALIASES])
def test_a_str_subclass_return_value_comes_back_as_a_plain_str(alias):
    # Made plain in the worker: only plain data crosses back to this process.
    result = tasks.return_unpicklable_str.using(backend=alias).enqueue()
    result = task_backends[alias].wait_for_result(result.id, timeout=DEADLINE)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "made in the worker"
    assert type(result.return_value) is str

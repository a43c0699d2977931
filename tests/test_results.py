"""Results: copies that share nothing mutable with the stored result."""

from __future__ import annotations

from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.utils import timezone

from django_tasks_local.results import copy_json, snapshot
from django_tasks_local.states import transition
from tests import tasks

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL


def new_result(result_id: str, args=(), kwargs=None) -> TaskResult:
    return TaskResult(
        task=tasks.noop,
        id=result_id,
        status=READY,
        enqueued_at=timezone.now(),
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=list(args),
        kwargs=kwargs or {},
        backend="default",
        errors=[],
        worker_ids=[],
    )


def test_a_snapshot_shares_nothing_mutable():
    result = new_result("id", args=[[1], {"a": [2]}], kwargs={"k": {"nested": [3]}})
    transition(result, RUNNING, worker_ids=["worker"], started_at=timezone.now())
    transition(result, SUCCESSFUL, _return_value={"items": [1, {"deep": [2]}]})

    copy = snapshot(result)
    copy.args[0].append("x")
    copy.args[1]["a"].append("x")
    copy.kwargs["k"]["nested"].append("x")
    copy.worker_ids.append("x")
    copy.errors.append(TaskError(exception_class_path="x", traceback="x"))
    copy.return_value["items"][1]["deep"].append("x")

    assert result.args == [[1], {"a": [2]}]
    assert result.kwargs == {"k": {"nested": [3]}}
    assert result.worker_ids == ["worker"]
    assert result.errors == []
    assert result.return_value == {"items": [1, {"deep": [2]}]}


def test_a_snapshot_does_not_follow_later_changes():
    result = new_result("id")
    copy = snapshot(result)

    transition(result, RUNNING, worker_ids=["worker"], started_at=timezone.now())

    assert (copy.status, copy.worker_ids, copy.started_at) == (READY, [], None)
    assert copy.id == result.id and copy.task is result.task


def test_copy_json_copies_lists_and_dicts_at_every_depth():
    value = {"a": [1, {"b": [2]}], "c": "text"}

    copy = copy_json(value)

    assert copy == value
    assert copy is not value
    assert copy["a"] is not value["a"]
    assert copy["a"][1] is not value["a"][1]
    assert copy["a"][1]["b"] is not value["a"][1]["b"]

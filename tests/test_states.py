"""The state machine: which status changes are allowed, and that the others change nothing."""

from __future__ import annotations

from itertools import product

import pytest
from django.tasks import TaskResult, TaskResultStatus
from django.utils import timezone

from django_tasks_local.exceptions import InvalidTransition
from django_tasks_local.states import transition
from tests import tasks

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED

ALLOWED = {
    (READY, RUNNING),
    (READY, FAILED),
    (RUNNING, SUCCESSFUL),
    (RUNNING, FAILED),
    (RUNNING, READY),  # a failed attempt that will be retried
}
REFUSED = sorted(set(product(TaskResultStatus, repeat=2)) - ALLOWED)


def result_in(status: TaskResultStatus) -> TaskResult:
    result = TaskResult(
        task=tasks.noop,
        id="result-id",
        status=READY,
        enqueued_at=timezone.now(),
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=[],
        kwargs={},
        backend="default",
        errors=[],
        worker_ids=[],
    )
    object.__setattr__(result, "status", status)
    return result


@pytest.mark.parametrize(("before", "after"), sorted(ALLOWED))
def test_allowed_transitions_set_the_status_and_the_changes(before, after):
    result = result_in(before)
    now = timezone.now()

    transition(result, after, finished_at=now, worker_ids=["worker"])

    assert result.status == after
    assert (result.finished_at, result.worker_ids) == (now, ["worker"])


@pytest.mark.parametrize(("before", "after"), REFUSED)
def test_other_transitions_are_refused_and_change_nothing(before, after):
    result = result_in(before)

    with pytest.raises(InvalidTransition, match=f"from {before} to {after}"):
        transition(result, after, finished_at=timezone.now(), worker_ids=["worker"])

    assert result.status == before
    assert (result.finished_at, result.worker_ids) == (None, [])

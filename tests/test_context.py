"""``current_result_id``: a running task finds its own result id."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus

from django_tasks_local import current_result_id
from django_tasks_local.context import bound_result_id
from tests import tasks
from tests.helpers import run_and_wait


def test_a_task_sees_its_own_result_id(alias):
    result = run_and_wait(alias, tasks.own_result_id)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == result.id


def test_a_thread_the_task_starts_sees_it_through_a_copied_context(alias):
    result = run_and_wait(alias, tasks.result_id_in_a_thread)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == [result.id]


def test_outside_a_task_there_is_no_result_id():
    with pytest.raises(LookupError):
        current_result_id.get()


def test_binding_is_undone_after_the_task_even_when_nested():
    with bound_result_id("outer"):
        with bound_result_id("inner"):
            assert current_result_id.get() == "inner"
        assert current_result_id.get() == "outer"

    with pytest.raises(LookupError):
        current_result_id.get()


def test_binding_is_undone_when_the_task_raises():
    with pytest.raises(ValueError), bound_result_id("failing"):
        raise ValueError

    with pytest.raises(LookupError):
        current_result_id.get()

"""LocalTaskContext (task_context.py): metadata a running task saves, and its cancellation."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.tasks import TaskResultStatus, task_backends

from django_tasks_local import LocalTaskResult
from tests import tasks
from tests.helpers import wait_until, wait_until_finished


def test_saved_metadata_is_read_while_the_task_runs(alias: str, tmp_path: Path) -> None:
    release = tmp_path / "release"
    backend = task_backends[alias]
    result = tasks.report_progress.using(backend=alias).enqueue(str(release))
    assert result.metadata == {}
    # Saved in the worker (a thread, or a process through its pipe): read
    # here while the task still runs.
    wait_until(
        lambda: backend.get_result(result.id).metadata == {"progress": 50},
        message="the saved progress read back",
    )
    assert backend.get_result(result.id).status == TaskResultStatus.RUNNING
    release.touch()
    final = wait_until_finished(alias, result.id)
    # What the task left in context.metadata, unsaved, is kept with its end.
    assert final.metadata == {"progress": 100}
    assert final.return_value == {"progress": 100}
    result.refresh()
    assert result.metadata == {"progress": 100}


def test_async_tasks_save_metadata(alias: str, tmp_path: Path) -> None:
    release = tmp_path / "release"
    backend = task_backends[alias]
    result = tasks.async_report_progress.using(backend=alias).enqueue(str(release))
    wait_until(lambda: backend.get_result(result.id).metadata == {"progress": 50})
    release.touch()
    assert wait_until_finished(alias, result.id).return_value == 50


def test_metadata_that_is_not_json_is_refused_in_the_task(alias: str) -> None:
    result = tasks.save_bad_metadata.using(backend=alias).enqueue()
    final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.FAILED
    assert final.errors[0].exception_class_path == "builtins.TypeError"
    assert "context.metadata['when'] is not JSON" in final.errors[0].traceback
    assert final.metadata == {}


def test_callers_get_copies_of_the_metadata(tmp_path: Path) -> None:
    result = tasks.read_metadata.using(backend="threads", metadata={"a": [1]}).enqueue()
    result.metadata["a"].append(2)
    final = task_backends["threads"].wait_for_result(result.id, 60)
    assert final.return_value == {"a": [1]}
    final.metadata["a"].append(3)
    assert task_backends["threads"].get_result(result.id).metadata == {"a": [1]}


def test_the_results_are_ours() -> None:
    result = tasks.read_metadata.using(backend="threads").enqueue()
    assert isinstance(result, LocalTaskResult)
    final = task_backends["threads"].wait_for_result(result.id, 60)
    assert isinstance(final, LocalTaskResult)


@pytest.mark.parametrize("alias", ["threads", "threads-sqlite"])
def test_saving_outside_the_task_is_ignored_once_it_ended(alias: str) -> None:
    # A late save (an abandoned thread's) never changes a final result.
    result = tasks.read_metadata.using(backend=alias).enqueue()
    final = wait_until_finished(alias, result.id)
    runtime = task_backends[alias].runtime
    runtime.save_metadata(result.id, 1, {"late": True})
    assert task_backends[alias].get_result(result.id).metadata == final.metadata

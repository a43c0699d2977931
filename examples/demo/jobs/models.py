from typing import Any

from django.db import models
from django.tasks import TaskResult, TaskResultStatus


class Job(models.Model):
    """A task that the page started, and what is known of how it went.

    The backend's own result is read live where it can be
    (``task.get_result``); this row keeps a copy for backends that cannot
    (ImmediateBackend) or no longer can (a thread or process pool forgets
    its results when the server restarts).
    """

    class Kind(models.TextChoices):
        FETCH = "fetch", "Fetch pages (I/O-bound)"
        PRIMES = "primes", "Count primes (CPU-bound)"
        RECORDS = "records", "Add up records (fails on a bad one)"

    kind = models.CharField(max_length=10, choices=Kind)
    parameters = models.JSONField()
    result_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=10, choices=TaskResultStatus, default=TaskResultStatus.READY
    )
    return_value = models.JSONField(null=True)
    exception_class = models.CharField(max_length=200, blank=True)
    traceback = models.TextField(blank=True)
    worker_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)

    def describe_parameters(self) -> str:
        return ", ".join(
            f"{name}: {' '.join(value) if isinstance(value, list) else value}"
            for name, value in self.parameters.items()
        )

    def copy_result(self, result: TaskResult) -> None:
        """Take the state of a TaskResult (without saving)."""
        for name, value in result_fields(result).items():
            setattr(self, name, value)


def result_fields(result: TaskResult) -> dict[str, Any]:
    """The Job fields that mirror a TaskResult."""
    error = result.errors[-1] if result.errors else None
    return {
        "status": result.status,
        "return_value": (
            result.return_value
            if result.status == TaskResultStatus.SUCCESSFUL
            else None
        ),
        "exception_class": error.exception_class_path if error else "",
        "traceback": error.traceback if error else "",
        "worker_id": result.worker_ids[-1] if result.worker_ids else "",
    }


def record_task_result(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
    """Signal receiver: copy a started or finished result into its Job row.

    ImmediateBackend runs the task before the view has created the row; the
    view copies the finished result itself then.
    """
    Job.objects.filter(result_id=task_result.id).update(**result_fields(task_result))

"""The durable store's tables: one row per task result, one per live backend process."""

from __future__ import annotations

from django.db import models
from django.tasks import TaskResultStatus


class StoredResult(models.Model):
    """A task result as the database store keeps it, readable from every process.

    ``owner`` names the lease of the process that runs the task; ``dispatched``
    says that a worker may have started it (so it is never run again);
    ``held`` that its enqueue waits for a transaction on another database.
    """

    id = models.CharField(primary_key=True, max_length=64)
    backend = models.CharField(max_length=100)
    task_path = models.CharField(max_length=255)
    priority = models.IntegerField(default=0)
    queue_name = models.CharField(max_length=100)
    run_after = models.DateTimeField(null=True, blank=True)
    takes_context = models.BooleanField(default=False)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=TaskResultStatus.choices)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list)
    worker_ids = models.JSONField(default=list)
    owner = models.CharField(max_length=200, blank=True)
    dispatched = models.BooleanField(default=False)
    held = models.BooleanField(default=False)
    # The result's metadata: given at enqueue, saved by the running task.
    metadata = models.JSONField(default=dict)

    class Meta:
        verbose_name = "task result"
        # Few indexes, since every one is written at each step of a task's
        # life: (backend, finished_at) finds the unfinished rows (NULL) and
        # the oldest finished ones.
        indexes = [
            models.Index(
                fields=["backend", "finished_at"], name="dtl_backend_finished"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} ({self.id}): {self.status}"


class Lease(models.Model):
    """A backend process that is alive while ``expires_at`` is ahead: it renews it."""

    id = models.CharField(primary_key=True, max_length=200)
    backend = models.CharField(max_length=100)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "backend process lease"

    def __str__(self) -> str:
        return self.id


class FinishedCount(models.Model):
    """How many finished rows of ``StoredResult`` each backend alias has.

    Kept by the database itself: triggers on ``StoredResult`` (migration
    0003) count each row that finishes, and each finished row that goes,
    whatever writes it. A task's end then checks ``MAX_RESULTS`` by reading
    one row, instead of counting the finished rows (which costs in
    proportion to ``MAX_RESULTS``).
    """

    backend = models.CharField(primary_key=True, max_length=100)
    finished = models.IntegerField(default=0)

    class Meta:
        verbose_name = "finished result count"

    def __str__(self) -> str:
        return f"{self.backend}: {self.finished}"

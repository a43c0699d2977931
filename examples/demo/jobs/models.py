from django.db import models


class Job(models.Model):
    """A task that the page started: which kind, with what, and its result id.

    How it goes is the backend's to say (``task.get_result``). Only
    ImmediateBackend cannot say it later (``supports_get_result`` is False):
    the result its enqueue returned, already final, is kept in ``outcome``.
    """

    class Kind(models.TextChoices):
        FETCH = "fetch", "Fetch pages (I/O-bound)"
        PRIMES = "primes", "Count primes (CPU-bound)"
        RECORDS = "records", "Add up records (fails on a bad one)"

    kind = models.CharField(max_length=10, choices=Kind)
    parameters = models.JSONField()
    result_id = models.CharField(max_length=64, unique=True)
    outcome = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    def describe_parameters(self) -> str:
        return ", ".join(
            f"{name}: {' '.join(value) if isinstance(value, list) else value}"
            for name, value in self.parameters.items()
        )

"""Models that tasks in the tests read and write."""

from django.db import models


class Record(models.Model):
    label = models.CharField(max_length=200)
    value = models.IntegerField(null=True)

    def __str__(self) -> str:
        return self.label

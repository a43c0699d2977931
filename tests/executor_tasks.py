"""Module-level tasks the custom-executor tests run (workers import them from here)."""

import os

from django.tasks import task


@task
def multiply(a, b):
    return a * b


@task
def as_tuple(*values):
    return tuple(values)


@task
def pid():
    return os.getpid()


@task
def fail(message):
    raise KeyError(message)


@task
def save_record(label):
    # Needs the app registry: only a worker that has set Django up can run it.
    from tests.models import Record

    return Record.objects.create(label=label, value=os.getpid()).pk

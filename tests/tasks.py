"""Module-level tasks the tests enqueue (worker processes import them from here)."""

import threading

from django.tasks import task

from django_tasks_local import current_result_id


@task
def add(a, b):
    return a + b


@task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task
def return_tuple():
    return (1, 2)


@task
def fail(message="boom"):
    raise ValueError(message)


@task
def exit_task():
    raise SystemExit(3)


@task
def own_result_id():
    return current_result_id.get()


@task(takes_context=True)
def with_context(context, value):
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


# Set by wait_for_event when its body starts; it then waits for the release.
# Thread backends only: these events do not cross into worker processes.
wait_for_event_started = threading.Event()
wait_for_event_release = threading.Event()
wait_for_event_returned = threading.Event()


@task
def wait_for_event():
    wait_for_event_started.set()
    if not wait_for_event_release.wait(60):
        raise TimeoutError("never released")
    wait_for_event_returned.set()
    return "released"

"""Module-level tasks the tests enqueue (worker processes import them from here)."""

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

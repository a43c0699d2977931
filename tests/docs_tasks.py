"""The tasks of the documentation's examples.

The pages show these sections (``--8<--`` markers) as a project's
``myapp/tasks.py``, and their executed blocks import ``myapp.tasks``, which
tests/test_docs.py maps to this module. Worker processes import the tasks
from here, by their real path.
"""

# --8<-- [start:quickstart]
from django.tasks import task

from django_tasks_local import current_result_id


@task
def count_words(text):
    return len(text.split())


@task(backend="processes")
def count_primes(limit):
    """CPU-bound: worth a worker process of its own."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[:2] = b"\0\0"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit + 1, n)))
    return sum(sieve)


@task(takes_context=True)
def describe_attempt(context):
    return {"id": context.task_result.id, "attempt": context.attempt}


@task
def whoami():
    return current_result_id.get()


@task
async def shout(text):
    return text.upper()


# --8<-- [end:quickstart]


# --8<-- [start:state]
SEEN = []


@task
def remember(value):
    SEEN.append(value)
    return len(SEEN)


# --8<-- [end:state]


# --8<-- [start:helper-threads]
@task
def ids_seen_by_helper_threads():
    import contextvars
    import threading

    seen = {}

    def look(name):
        seen[name] = current_result_id.get(None)

    plain = threading.Thread(target=look, args=("plain",))
    context = contextvars.copy_context()
    copied = threading.Thread(target=context.run, args=(look, "copied"))
    for thread in (plain, copied):
        thread.start()
        thread.join()
    return seen


# --8<-- [end:helper-threads]

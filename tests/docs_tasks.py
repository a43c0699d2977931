"""The tasks of the documentation's examples.

The pages show these sections (``--8<--`` markers) as a project's
``myapp/tasks.py``, and their executed blocks import ``myapp.tasks``, which
tests/test_docs.py maps to this module. Worker processes import the tasks
from here, by their real path.
"""

# --8<-- [start:attempts-imports]
import time
from dataclasses import replace

# --8<-- [start:quickstart]
from django.tasks import task

# --8<-- [end:attempts-imports]
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


# --8<-- [start:attempts]
class FeedUnavailable(Exception):
    """The feed's server failed for a moment: worth another attempt."""


def short_backoff(exception, task_result):
    """The examples' waits: 0.1 s after the first attempt, 0.2 s after the second..."""
    return 0.1 * 2 ** (task_result.attempts - 1)


@task(takes_context=True)
def fetch_feed(context, url):
    # A stand-in for a flaky server: the first two attempts fail.
    if context.attempt < 3:
        raise FeedUnavailable(f"{url} answered 503 (attempt {context.attempt})")
    return {"url": url, "attempt": context.attempt}


STOPPED = []  # for the examples: the results whose task saw it was stopped


@task(takes_context=True)
def resize_images(context, count, seconds_each):
    """Long work in steps: it saves its progress, and stops when told to."""
    for done in range(1, count + 1):
        if context.is_cancelled:  # cancelled, or past its timeout (threads)
            STOPPED.append(context.task_result.id)
            return done - 1  # ignored: the result is final already
        time.sleep(seconds_each)  # resize one image
        context.metadata["progress"] = {"done": done, "total": count}
        context.save_metadata()
    return count


@task
def hang(seconds):
    """Never looks at a context: only a worker process can be stopped."""
    time.sleep(seconds)


# Django 6.1 takes these fields on the decorator, @task(takes_context=True,
# max_attempts=4, backoff=short_backoff, retry_on=[FeedUnavailable]); this
# way works on Django 6.0 too.
fetch_feed = replace(
    fetch_feed, max_attempts=4, backoff=short_backoff, retry_on=[FeedUnavailable]
)
hang = replace(hang, timeout=2)  # Django 6.1: @task(timeout=2)
# --8<-- [end:attempts]

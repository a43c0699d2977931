"""Result ids: random, unique across threads, and never shared with a forked child."""

from __future__ import annotations

import multiprocessing
import re
import threading

import pytest

from django_tasks_local.result_ids import IDS_PER_REFILL, new_result_id

DEADLINE = 30


def test_ids_are_32_hex_digits_and_unique_across_refills_and_threads() -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [new_result_id() for _ in range(IDS_PER_REFILL * 3 + 1)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)

    assert len(ids) == 4 * (IDS_PER_REFILL * 3 + 1)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", result_id) for result_id in ids)


def _draw_in_child(connection: multiprocessing.connection.Connection) -> None:
    connection.send([new_result_id() for _ in range(5)])
    connection.close()


# The suite's runtimes have threads; the child touches none of their locks.
@pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_a_forked_child_does_not_draw_the_ids_its_parent_will() -> None:
    new_result_id()  # the buffer is filled and partly drawn when the fork comes
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_draw_in_child, args=(sender,))
    child.start()
    assert receiver.poll(DEADLINE)
    in_child = receiver.recv()
    child.join(DEADLINE)
    in_parent = [new_result_id() for _ in range(5)]
    assert not set(in_child) & set(in_parent)

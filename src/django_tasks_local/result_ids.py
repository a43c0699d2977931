"""Result ids: 32 random hex digits, as ``secrets.token_hex(16)`` makes them.

``os.urandom`` lets go of the GIL around its system call, so one call per
enqueue hands the GIL to another thread on every enqueue: under a burst, with
workers waiting for it, each task would cost a thread switch or two. Each
thread here draws its ids from its own buffer of ``os.urandom`` bytes, refilled
for many ids at once.
"""

from __future__ import annotations

import os
import threading

# Ids per refill: one system call (and one GIL hand-off) per this many enqueues.
IDS_PER_REFILL = 256
_ID_LENGTH = 32  # hex digits: 16 random bytes


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.digits = ""
        self.offset = 0


_buffer = _Buffer()


def new_result_id() -> str:
    """A new id, unguessable and unique: 128 bits from the OS's CSPRNG."""
    buffer = _buffer
    start = buffer.offset
    if start >= len(buffer.digits):
        buffer.digits = os.urandom(IDS_PER_REFILL * _ID_LENGTH // 2).hex()
        start = 0
    buffer.offset = start + _ID_LENGTH
    return buffer.digits[start : start + _ID_LENGTH]


def _forget_inherited_buffers() -> None:
    # A forked child has a copy of the parent's buffers: it would hand out the
    # ids the parent is about to.
    global _buffer
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_forget_inherited_buffers)

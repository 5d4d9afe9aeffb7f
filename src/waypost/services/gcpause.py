"""Pausing the cyclic garbage collector while a large answer is built.

Building a THREAD forest or a SORT order of 50,000 messages makes about as
many container objects, all alive until the answer is done. CPython counts
them as new long-lived objects and runs full collections meanwhile, each
walking every object of the server (indexes, caches, sessions): measured,
that made THREAD two to four times slower on a server holding a large
mailbox. Nothing built there is a reference cycle worth collecting early,
so collection waits until the build ends (and then runs as usual).

Thread-safe: the collector is paused while at least one build runs, in any
thread, and re-enabled when the last one ends; never enabled here if it was
disabled by someone else before the first pause.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_paused = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    global _paused, _was_enabled
    with _lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()

"""A reader-writer lock for threads: many readers at once, or one writer alone.

Writers are preferred: once a writer waits, new readers wait behind it, so a stream of searches
cannot starve an ``add``. Not re-entrant: a thread holding it must not acquire it again.
``with lock.reading():`` / ``with lock.writing():`` cost a few microseconds each.
"""

from __future__ import annotations

import threading


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read = _Side(self._acquire_read, self._release_read)
        self._write = _Side(self._acquire_write, self._release_write)

    def reading(self) -> "_Side":
        return self._read

    def writing(self) -> "_Side":
        return self._write

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _Side:
    """A context manager over one side of the lock (shared by every thread: it keeps no state)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc) -> None:
        self._release()

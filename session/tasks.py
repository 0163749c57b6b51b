"""Letting go of what a cancelled asyncio task keeps."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["forget_cancellation"]


def forget_cancellation(task: asyncio.Future[Any]) -> None:
    """Drops the CancelledError a cancelled task keeps; a no-op for any other task.

    A task that ended cancelled holds the error it ended with until someone asks for it. That
    error's traceback holds the task's frames, and their locals often lead back to the task
    (a TaskGroup's parent task, an object that keeps its own tasks): a reference cycle, freed
    with all the frames refer to (a whole call) only by one of the collector's rare full
    collections. CPython hands the stored error over on the first `exception()`, so asking
    once breaks the cycle.
    """
    if task.done() and task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()

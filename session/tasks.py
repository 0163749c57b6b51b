"""Letting go of what a cancelled asyncio task keeps."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["forget_cancellation", "reap"]


def forget_cancellation(task: asyncio.Future[Any]) -> None:
    """Drops the CancelledError a cancelled task keeps; a no-op for any other task.

    A task that ended cancelled holds the error it ended with until someone asks for it. That
    error's traceback holds the task's frames, and their locals often lead back to the task
    (a TaskGroup's parent task, an object that keeps its own tasks): a reference cycle, freed
    with all the frames refer to (a whole call) only by one of the collector's rare full
    collections. CPython hands the stored error over on the first `exception()`. The error
    may still be in a cycle of its own (3.11's `TaskGroup.__aexit__` keeps it in a local of a
    frame its traceback holds), and being raised here adds this frame and its callers to that
    traceback: nobody reads it, so it goes too.
    """
    if not (task.done() and task.cancelled()):
        return
    try:
        task.exception()
    except asyncio.CancelledError as exc:
        exc.__traceback__ = None
        exc.__context__ = None


async def reap(*tasks: asyncio.Future[Any]) -> None:
    """Waits for `tasks` to end, whatever they end with, and lets go of what the cancelled
    ones keep (`forget_cancellation`): how an owner waits for the tasks it cancelled."""
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        forget_cancellation(task)

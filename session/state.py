"""Session states and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from session.errors import ErrorCode, SessionError


class SessionState(StrEnum):
    INITIAL = "initial"
    STARTING = "starting"
    LISTENING = "listening"
    PROCESSING = "processing"
    SPEAKING = "speaking"
    PAUSED = "paused"
    ENDED = "ended"


S = SessionState

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.INITIAL: frozenset({S.STARTING, S.ENDED}),
    S.STARTING: frozenset({S.LISTENING, S.ENDED}),
    # LISTENING -> SPEAKING: say() while nobody is talking needs no processing step.
    S.LISTENING: frozenset({S.PROCESSING, S.SPEAKING, S.PAUSED, S.ENDED}),
    # PROCESSING -> LISTENING: the agent produced nothing, or the caller cut it short.
    S.PROCESSING: frozenset({S.SPEAKING, S.LISTENING, S.PAUSED, S.ENDED}),
    # SPEAKING -> PROCESSING: a new turn committed while the last reply was still playing.
    S.SPEAKING: frozenset({S.LISTENING, S.PROCESSING, S.PAUSED, S.ENDED}),
    S.PAUSED: frozenset({S.LISTENING, S.ENDED}),
    S.ENDED: frozenset(),
}


def check_transition(current: SessionState, new: SessionState) -> None:
    if new not in TRANSITIONS[current]:
        raise SessionError(
            ErrorCode.INVALID_STATE, f"cannot go from {current.value} to {new.value}"
        )

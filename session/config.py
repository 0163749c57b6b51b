"""Session configuration with validated defaults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields

from session.errors import ErrorCode, SessionError

# field name -> (lowest allowed, highest allowed); None means unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "timeout": (1.0, None),
    "keep_alive_interval": (0.1, None),
    "max_retries": (0, 20),
    "retry_delay": (0.0, 60.0),
    "min_endpointing_delay": (0.0, 10.0),
    "max_endpointing_delay": (0.0, 30.0),
    "min_speech_duration": (0.0, 1.0),
    "speech_end_silence": (0.02, 5.0),
    "pre_roll": (0.0, 2.0),
    "min_interruption_duration": (0.0, 10.0),
    "min_interruption_words": (0, 100),
    "false_interruption_timeout": (0.0, 30.0),
    "dtmf_turn_timeout": (0.1, 30.0),
    "final_transcript_timeout": (0.1, 60.0),
    "max_turn_duration": (1.0, 3600.0),
    "max_chunk_duration": (0.5, 120.0),
    "stt_replay_seconds": (0.0, 600.0),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "long_turn_policy": ("process", "interject"),
    "on_provider_failure": ("apologise", "end"),
}


@dataclass(frozen=True, slots=True)
class Config:
    """How one voice session behaves. Durations are seconds.

    Turn taking: VAD marks speech after `min_speech_duration` of voiced audio and its end after
    `speech_end_silence` of silence; the recogniser is flushed then, and the turn ends once the
    caller has been silent for the endpointing delay (between `min_endpointing_delay` and
    `max_endpointing_delay`, chosen by the turn detector) and the final transcript is in.
    The silence is counted from the caller's last voiced frame, not from the end of the VAD's
    hangover (`session.speech_tracker`), so the delay is the pause the caller actually made.

    The endpointing defaults: 0.4 s after a transcript that looks finished, 3.0 s after one
    that looks unfinished ("I'd like to book a table for", "um"). LiveKit Agents uses 0.5 and
    3.0 s from the last speech its VAD heard (a turn ends after max(VAD silence, 0.5 s), its
    Silero VAD needing 0.55 s); Pipecat's plain VAD turn ends after 0.8 s, and with its turn
    model after 0.2 s of silence (3.0 s when the model finds the turn incomplete). Gaps between
    turns in conversation are about 0.2 s, so 0.4 s answers promptly while the turn detector
    holds on for a caller who sounds mid-sentence.

    Preemptive generation starts the agent as soon as the caller pauses with a final
    transcript; the reply is used if the turn's transcript ends up the same. A turn longer
    than `max_turn_duration` is cut: `long_turn_policy` "process" hands what was said so far
    to the agent as a normal turn, "interject" makes that reply uninterruptible so the agent
    can cut in. Recognisers that cannot stream get chunks of at most `max_chunk_duration`.
    When a provider fails past its retries, `on_provider_failure` says whether the session
    apologises and keeps listening or ends with the error.
    """

    session_id: str = ""
    timeout: float = 1800.0
    auto_start: bool = False
    enable_keep_alive: bool = True
    keep_alive_interval: float = 30.0
    max_retries: int = 3
    retry_delay: float = 1.0
    min_endpointing_delay: float = 0.4
    max_endpointing_delay: float = 3.0
    min_speech_duration: float = 0.1
    speech_end_silence: float = 0.25
    pre_roll: float = 0.3
    min_interruption_duration: float = 0.5
    min_interruption_words: int = 0
    false_interruption_timeout: float = 2.0
    dtmf_turn_timeout: float = 1.0
    final_transcript_timeout: float = 5.0
    apology_text: str = "Sorry, I am having trouble right now. Please say that again."
    preemptive_generation: bool = True
    max_turn_duration: float = 120.0
    long_turn_policy: str = "process"
    max_chunk_duration: float = 10.0
    stt_replay_seconds: float = 30.0
    on_provider_failure: str = "apologise"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RANGES:
                low, high = _RANGES[f.name]
                expected = int if f.type in ("int", int) else (int, float)
                if isinstance(value, bool) or not isinstance(value, expected):
                    raise _invalid(f.name, f"must be a number, got {value!r}")
                if (low is not None and value < low) or (high is not None and value > high):
                    bounds = f"[{low}, {'inf' if high is None else high}]"
                    raise _invalid(f.name, f"must be within {bounds}, got {value!r}")
            elif f.name in _CHOICES:
                if value not in _CHOICES[f.name]:
                    allowed = " or ".join(repr(c) for c in _CHOICES[f.name])
                    raise _invalid(f.name, f"must be {allowed}, got {value!r}")
            elif f.type in ("bool", bool) and not isinstance(value, bool):
                raise _invalid(f.name, f"must be true or false, got {value!r}")
        if self.max_endpointing_delay < self.min_endpointing_delay:
            raise _invalid(
                "max_endpointing_delay",
                f"must be >= min_endpointing_delay ({self.min_endpointing_delay}), "
                f"got {self.max_endpointing_delay}",
            )
        if self.speech_end_silence > self.min_endpointing_delay > 0:
            raise _invalid(
                "speech_end_silence",
                f"must not exceed min_endpointing_delay ({self.min_endpointing_delay})",
            )
        if not self.session_id:
            object.__setattr__(self, "session_id", uuid.uuid4().hex)


def _invalid(name: str, message: str) -> SessionError:
    return SessionError(ErrorCode.INVALID_CONFIG, f"Config.{name} {message}")

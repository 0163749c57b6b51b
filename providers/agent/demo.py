"""A rule-based agent for demos and tests: answers a few phrases, echoes everything else.

It streams its replies in small pieces, like a language model would, so the session's sentence
splitting and preemptive synthesis get exercised without any network.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Final

from session.interfaces import AgentContext

__all__ = ["DemoAgent", "spoken_time"]

GREETING: Final = "Hello! You are talking to the voice gateway demo. How can I help?"
WORDS_PER_PIECE: Final = 3

_WORD: Final = re.compile(r"[a-z0-9']+")
_GREETINGS: Final = frozenset({"hello", "hi", "hey", "hiya", "howdy"})
_FAREWELLS: Final = frozenset({"bye", "goodbye"})

_ONES: Final = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS: Final = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty"}


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"


def spoken_time(moment: datetime) -> str:
    """'three oh seven PM' style: what a synthesiser reads naturally (no digits, no colon)."""
    hour = moment.hour % 12 or 12
    if moment.minute == 0:
        minutes = "o'clock"
    elif moment.minute < 10:
        minutes = f"oh {_ONES[moment.minute]}"
    else:
        minutes = _number_words(moment.minute)
    return f"{_number_words(hour)} {minutes} {'AM' if moment.hour < 12 else 'PM'}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DemoAgent:
    name = "demo"
    greeting = GREETING

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock

    async def respond(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        for piece in _pieces(self.reply_text(ctx, transcript)):
            yield piece
            await asyncio.sleep(0)  # a real model yields control between tokens; so do we

    def reply_text(self, ctx: AgentContext, transcript: str) -> str:
        """The whole reply; `respond` streams it."""
        if ctx.dtmf:
            return f"You pressed {' '.join(ctx.dtmf)}."
        words = _WORD.findall(transcript.lower())
        if not words:
            return "Sorry, I did not catch that. Could you say it again?"
        said = set(words)
        joined = " ".join(words)
        # Most specific first: "hello, goodbye" is a farewell, "hi, how are you" a question.
        if said & _FAREWELLS or "good bye" in joined:
            return "Goodbye! Thanks for calling."
        if "help" in said:
            return (
                "I am a demo. I can tell you the time, answer how are you, and repeat what "
                "you say. You can also press keys on your phone."
            )
        if "time" in said:
            return f"It is {spoken_time(self._clock())}, UTC."
        if "how are you" in joined:
            return "I am doing well, thank you for asking. How are you?"
        if said & _GREETINGS:
            return "Hello there! What can I do for you?"
        return f"You said: {transcript.strip().rstrip('.!?')}."


def _pieces(text: str) -> list[str]:
    # Pieces keep their trailing spaces, so joining them gives the text back exactly.
    words = re.findall(r"\S+\s*", text)
    return ["".join(words[i : i + WORDS_PER_PIECE]) for i in range(0, len(words), WORDS_PER_PIECE)]

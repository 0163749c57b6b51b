"""An agent that answers every turn at once with the same sentence."""

from __future__ import annotations

from typing import Final

from session.interfaces import AgentContext

__all__ = ["InstantAgent"]

DEFAULT_REPLY: Final = "Sure, here is your answer."
DEFAULT_GREETING: Final = "Hello."


class InstantAgent:
    name = "instant"

    def __init__(self, reply: str = DEFAULT_REPLY, greeting: str = DEFAULT_GREETING) -> None:
        self.reply = reply
        self.greeting = greeting

    async def respond(self, ctx: AgentContext, transcript: str) -> str:
        return self.reply

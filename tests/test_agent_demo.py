from datetime import UTC, datetime

import pytest

from providers.agent.demo import DemoAgent, spoken_time
from session.interfaces import AgentContext


def context(dtmf: str = "") -> AgentContext:
    return AgentContext(session_id="s1", metadata={}, dtmf=dtmf)


async def reply(agent: DemoAgent, transcript: str, dtmf: str = "") -> tuple[str, int]:
    pieces = [piece async for piece in agent.respond(context(dtmf), transcript)]
    assert all(pieces)
    return "".join(pieces), len(pieces)


def test_greeting() -> None:
    assert DemoAgent.greeting == "Hello! You are talking to the voice gateway demo. How can I help?"


async def test_reply_streams_in_several_pieces() -> None:
    text, count = await reply(DemoAgent(), "tell me something about the weather")
    assert count > 1
    assert text == "You said: tell me something about the weather."


async def test_dtmf_digits_are_read_back_spaced() -> None:
    text, _ = await reply(DemoAgent(), "", dtmf="123#")
    assert text == "You pressed 1 2 3 #."


@pytest.mark.parametrize("transcript", ["", "   ", "...", "?"])
async def test_nothing_heard_asks_to_repeat(transcript: str) -> None:
    text, _ = await reply(DemoAgent(), transcript)
    assert "say it again" in text


@pytest.mark.parametrize("transcript", ["hello", "Hi!", "hey there", "HELLO."])
async def test_greetings_are_returned(transcript: str) -> None:
    text, _ = await reply(DemoAgent(), transcript)
    assert text.startswith("Hello there")


@pytest.mark.parametrize("transcript", ["how are you", "Hello, how are you?"])
async def test_how_are_you_is_answered(transcript: str) -> None:
    text, _ = await reply(DemoAgent(), transcript)
    assert "doing well" in text


async def test_time_is_spoken_in_utc() -> None:
    agent = DemoAgent(clock=lambda: datetime(2024, 5, 1, 15, 7, tzinfo=UTC))
    text, _ = await reply(agent, "What time is it?")
    assert text == "It is three oh seven PM, UTC."


@pytest.mark.parametrize(
    ("hour", "minute", "spoken"),
    [(0, 0, "twelve o'clock AM"), (12, 30, "twelve thirty PM"), (23, 59, "eleven fifty nine PM")],
)
def test_spoken_time(hour: int, minute: int, spoken: str) -> None:
    assert spoken_time(datetime(2024, 1, 1, hour, minute, tzinfo=UTC)) == spoken


@pytest.mark.parametrize("transcript", ["bye", "Goodbye!", "ok good bye", "hello and goodbye"])
async def test_farewell(transcript: str) -> None:
    text, _ = await reply(DemoAgent(), transcript)
    assert text == "Goodbye! Thanks for calling."


async def test_help_lists_what_it_can_do() -> None:
    text, _ = await reply(DemoAgent(), "Help me please")
    assert "time" in text
    assert "repeat" in text


async def test_anything_else_is_echoed() -> None:
    text, _ = await reply(DemoAgent(), "I would like a pizza!")
    assert text == "You said: I would like a pizza."


async def test_dtmf_wins_over_speech() -> None:
    text, _ = await reply(DemoAgent(), "goodbye", dtmf="9")
    assert text == "You pressed 9."

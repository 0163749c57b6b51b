"""End to end: the caller simulator plays Twilio against a real uvicorn server.

Nothing in the call path is replaced: real websockets over TCP, the Twilio codec, webrtcvad,
PocketSphinx, eSpeak NG and the demo agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.caller import CallReport, run_call
from session.state import SessionState
from tests.gateway_server import RunningGateway, run_gateway

API_TOKEN = "test-api-token"


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with run_gateway() as running:
        yield running


def kinds(report: CallReport, kind: str) -> list[dict]:
    return [e["data"] for e in report.events if e["kind"] == kind]


async def call(gateway: RunningGateway, lines: list[str], **options) -> CallReport:
    report = await run_call(gateway.url, lines, api_token=API_TOKEN, printer=None, **options)
    await wait_until_ended(gateway, report.call_sid)
    return report


async def wait_until_ended(gateway: RunningGateway, call_sid: str, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while call_sid in gateway.runtime.live:
        assert asyncio.get_running_loop().time() < deadline, "the session did not end"
        await asyncio.sleep(0.05)


async def test_two_turn_call_is_heard_transcribed_and_answered(gateway: RunningGateway) -> None:
    report = await call(gateway, ["hello how are you today", "goodbye"])
    assert report.ok, report.errors
    assert report.greeting_audio_seconds > 1.0
    assert len(report.turns) == 2
    for turn in report.turns:
        assert turn.reply_latency is not None and 0 < turn.reply_latency < 5
        assert turn.reply_audio_seconds > 0.3
        assert turn.transcripts and any(t.strip() for t in turn.transcripts)
        assert turn.agent_text
    assert "how are you" in " ".join(report.turns[0].transcripts)
    # Playout completion is observed by the session from the echoed marks.
    assert report.marks_echoed >= 3
    finished = kinds(report, "reply_finished")
    assert len(finished) == 3  # greeting + two replies
    assert all(not f["interrupted"] and f["heard_text"] == f["text"] for f in finished)
    assert report.underruns == 0
    record = gateway.record(report.call_sid)
    assert record is not None and record.state == SessionState.ENDED
    assert record.end_reason == "stop"


async def test_barge_in_clears_the_reply_and_stops_sending_it(gateway: RunningGateway) -> None:
    report = await call(
        gateway,
        ["I would like to book a table for two people tonight at eight", "hello"],
        barge_in=True,
    )
    assert report.clears >= 1
    assert report.media_after_clear == 0
    interrupting = report.turns[1]
    assert interrupting.interrupted_previous
    assert interrupting.clear_latency is not None and interrupting.clear_latency < 1.5
    interrupted = kinds(report, "interrupted")
    assert interrupted and interrupted[0]["reason"] == "barge_in"
    finished = [f for f in kinds(report, "reply_finished") if f["interrupted"]]
    assert finished and finished[0]["heard_text"] != finished[0]["text"]
    # The caller's interrupting words still make a turn that gets answered.
    assert interrupting.reply_started_at is not None


async def test_dtmf_reaches_the_agent(gateway: RunningGateway) -> None:
    report = await call(gateway, ["dtmf:42#"])
    assert report.ok, report.errors
    assert [d["digit"] for d in kinds(report, "dtmf")] == ["4", "2", "#"]
    assert kinds(report, "user_turn") == [{"text": "", "dtmf": "42"}]
    assert "4 2" in " ".join(report.turns[0].agent_text)


async def test_hanging_up_mid_reply_ends_the_session_with_no_task_left(
    gateway: RunningGateway,
) -> None:
    report = await call(
        gateway,
        ["I would like to book a table for two people tonight at eight"],
        hangup_after_reply_start=0.4,
    )
    call_sid = report.call_sid
    record = gateway.record(call_sid)
    assert record is not None and record.state == SessionState.ENDED

    async def leftover_tasks() -> list[str]:
        return [
            t.get_name()
            for t in asyncio.all_tasks()
            if call_sid in t.get_name() and not t.done() and t is not asyncio.current_task()
        ]

    assert gateway.call_in_loop(leftover_tasks) == []
    finished = kinds(report, "reply_finished")
    assert finished[-1]["interrupted"] is True

import pytest

from providers.turn.heuristic import HeuristicTurnDetector

MIN, MAX = 0.4, 1.5


@pytest.mark.parametrize(
    "transcript",
    [
        "I want to go to",
        "I need a table for two and",
        "Can you tell me about the",
        "so um",
        "Well, uh",
        "it's because",
        "what I need is, I mean",
        "let me think,",
        "AND",
        "book it for a",
    ],
)
def test_unfinished_transcripts_wait_longer(transcript: str) -> None:
    assert HeuristicTurnDetector().endpointing_delay(transcript, MIN, MAX) == MAX


@pytest.mark.parametrize(
    "transcript",
    [
        "hello",
        "what time is it",
        "I would like to book a table.",
        "see you then",
        "thanks, bye!",
        "",
        "   ",
        "Is it for the?",  # a punctuating recogniser heard the sentence end
        "I think so.",
    ],
)
def test_finished_or_empty_transcripts_end_quickly(transcript: str) -> None:
    assert HeuristicTurnDetector().endpointing_delay(transcript, MIN, MAX) == MIN


def test_bad_delay_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_delay"):
        HeuristicTurnDetector().endpointing_delay("hello", 2.0, 1.0)

"""End-of-turn detection from the words alone: wait longer when the caller sounds unfinished."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["HeuristicTurnDetector"]

# Words a finished sentence rarely ends on. Words that often do end one ("then", "in", "on",
# "her", "this", "yet") are left out: a missed hold only costs a pause, a false one a delay
# on every such turn.
UNFINISHED_WORDS: Final = frozenset(
    {
        # conjunctions
        "and", "but", "or", "nor", "so", "because", "cause", "if", "than", "although",
        "though", "unless", "whereas", "whether",
        # prepositions
        "to", "of", "with", "for", "from", "into", "onto", "about", "at", "by", "like",
        # articles and possessives
        "the", "a", "an", "my", "your", "our", "their", "its",
        # fillers
        "um", "umm", "uh", "uhm", "er", "erm", "hmm", "mm", "ah",
    }
)  # fmt: skip
UNFINISHED_PHRASES: Final = (("i", "mean"), ("you", "know", "what"), ("such", "as"))
_WORD: Final = re.compile(r"[a-z']+")


class HeuristicTurnDetector:
    name = "heuristic"

    def endpointing_delay(self, transcript: str, min_delay: float, max_delay: float) -> float:
        if min_delay > max_delay:
            raise ValueError(f"min_delay ({min_delay}) must not exceed max_delay ({max_delay})")
        return max_delay if looks_unfinished(transcript) else min_delay


def looks_unfinished(transcript: str) -> bool:
    text = transcript.strip().lower()
    # A recogniser that punctuates tells us directly: a trailing comma or dash is a pause,
    # a full stop or question mark an end (checked first: "..." ends with ".").
    if text.endswith((",", "-", "...", "…")):
        return True
    if text.endswith((".", "?", "!")):
        return False
    words = _WORD.findall(text)
    if not words:
        return False
    if words[-1] in UNFINISHED_WORDS:
        return True
    return any(tuple(words[-len(phrase) :]) == phrase for phrase in UNFINISHED_PHRASES)

"""Streaming sentence splitting: hand TTS each sentence or long clause as soon as it is whole."""

from __future__ import annotations

import re

# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "approx"}
)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:]\s")


class SentenceSplitter:
    """Accumulates streamed text and yields complete sentences.

    A clause (up to a comma, semicolon or colon) is released early once the pending text is
    longer than `clause_chars`, so a long first sentence does not delay the first audio.
    """

    def __init__(self, clause_chars: int = 80) -> None:
        self._buffer = ""
        self._clause_chars = clause_chars

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                out.append(piece)
        return out

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer.strip(), ""
        return [piece] if piece else []

    def _find_cut(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            words = self._buffer[: match.start()].split()
            last = words[-1].lower().rstrip(".") if words else ""
            if match.group().startswith(".") and last in _ABBREVIATIONS:
                continue
            return match.end()
        if len(self._buffer) > self._clause_chars:
            match = _CLAUSE_END.search(self._buffer, 20)
            if match:
                return match.end()
        return None


_NORMALISE = re.compile(r"[^\w\s']+")


def normalise_transcript(text: str) -> str:
    """Case, punctuation and whitespace folded, for comparing two transcripts."""
    return " ".join(_NORMALISE.sub(" ", text.lower()).split())

"""Deterministic stand-ins for real providers, chosen by name like any other provider.

They do no recognition, synthesis or reasoning at all, and cost next to nothing, so a load
test measures the gateway rather than the providers, and gives the same result every run.
They live apart from the real providers so nobody mistakes them for one.
"""

from .instant_agent import InstantAgent
from .scripted_stt import ScriptedStream, ScriptedSTT
from .tone_tts import ToneTTS

__all__ = ["InstantAgent", "ScriptedSTT", "ScriptedStream", "ToneTTS"]

"""Where the shared real-call recordings live: `shared/fixtures/` beside the repository."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
RECORDED_CALL = FIXTURES / "twilio-recorded-call.jsonl"
PHONE_WAV = FIXTURES / "real-phone-how-are-you.wav"

"""`voice-gateway`: run the gateway, or call it like Twilio would."""

from __future__ import annotations

import argparse
import logging
import sys

from infra.logging import configure_logging
from infra.settings import Settings, SettingsError, load_settings

log = logging.getLogger("gateway")


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(host=args.host, port=args.port)
    except SettingsError as exc:
        print(f"voice-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.workers != 1:
        from gateway.workers import check_workers, serve_workers

        problem = check_workers(settings, args.workers)
        if problem is not None:
            print(f"voice-gateway: {problem}", file=sys.stderr)
            return 2
        _announce(settings)
        return serve_workers(settings, args.workers)
    _announce(settings)

    import uvicorn

    from gateway.app import create_app
    from gateway.provider_wiring import ProviderConfigError
    from gateway.workers import SERVER_OPTIONS, tune_gc
    from infra.telemetry_export import configure_telemetry
    from providers.registry import UnknownProviderError
    from session.errors import SessionError

    telemetry = configure_telemetry(settings)
    try:
        app = create_app(settings, telemetry=telemetry)
    except (UnknownProviderError, ProviderConfigError, SessionError) as exc:
        telemetry.shutdown()
        print(f"voice-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    uvicorn.run(app, host=settings.host, port=settings.port, **SERVER_OPTIONS)
    return 0


def _announce(settings: Settings) -> None:
    if not settings.signatures_enforced:
        log.warning(
            "TWILIO_AUTH_TOKEN is not set: Twilio signatures are NOT checked and anyone who "
            "can reach %s can place calls into this gateway",
            settings.public_url,
        )
    if settings.api_token_generated:
        # Printed once, on the terminal only, so it never lands in the log pipeline.
        print(
            f"API token for this run (set API_TOKEN to choose one): {settings.api_token}",
            file=sys.stderr,
        )
    log.info(
        "providers: stt=%s tts=%s vad=%s agent=%s; public URL %s",
        settings.stt_provider,
        settings.tts_provider,
        settings.vad_provider,
        settings.agent_provider,
        settings.public_url,
    )


def _call(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"voice-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    from gateway.caller import run_call_cli

    url = (args.url or settings.public_url).rstrip("/")
    api_token = None if settings.api_token_generated else settings.api_token
    return run_call_cli(url, args.lines, settings.twilio_auth_token, api_token, args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1); more than one needs REDIS_URL",
    )
    serve.set_defaults(func=_serve)

    call = sub.add_parser(
        "call",
        help="call a running gateway like Twilio does, speaking each line in turn",
        description="Each LINE is spoken with eSpeak after the previous reply finished "
        "playing; a line 'dtmf:123#' presses keys instead.",
    )
    call.add_argument("--url", help="gateway base URL (default: PUBLIC_URL or local)")
    call.add_argument("--verbose", action="store_true", help="also print interim transcripts")
    call.add_argument("lines", nargs="+", metavar="LINE")
    call.set_defaults(func=_call)

    from gateway.routes_cli import add_routes_parser

    add_routes_parser(sub)

    from gateway.load import add_load_parser

    add_load_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

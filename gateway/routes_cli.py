"""`voice-gateway routes ...`: the routes API from a terminal, with the same validation."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from infra.settings import load_settings


def add_routes_parser(sub: Any) -> None:
    routes = sub.add_parser(
        "routes",
        help="list, show, set or delete per-number routes on a running gateway",
        description="Talks to GET/PUT/DELETE /api/routes with API_TOKEN; NUMBER is E.164 or "
        "'default'. A route set here applies to the next call.",
    )
    routes.add_argument("--url", help="gateway base URL (default: PUBLIC_URL or local)")
    actions = routes.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every route")
    for name in ("get", "delete"):
        actions.add_parser(name, help=f"{name} one route").add_argument("number")
    put = actions.add_parser("set", help="create or replace a route")
    put.add_argument("number")
    put.add_argument("--agent")
    put.add_argument("--stt")
    put.add_argument("--tts")
    put.add_argument("--vad")
    put.add_argument("--voice")
    put.add_argument("--greeting")
    put.add_argument("--language")
    put.add_argument("--max-call-seconds", type=int)
    put.add_argument("--inactivity-timeout", type=float)
    put.add_argument("--max-turn-seconds", type=float)
    routes.set_defaults(func=run_routes)


def _route_body(args: argparse.Namespace) -> dict[str, Any]:
    body = {
        key: getattr(args, key)
        for key in ("agent", "stt", "tts", "vad", "voice", "greeting", "language")
        if getattr(args, key) is not None
    }
    limits = {
        key: getattr(args, key)
        for key in ("max_call_seconds", "inactivity_timeout", "max_turn_seconds")
        if getattr(args, key) is not None
    }
    if limits:
        body["limits"] = limits
    return body


def run_routes(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.api_token_generated:
        print(
            "routes: set API_TOKEN (or run `make run`, which writes one to .env)", file=sys.stderr
        )
        return 2
    base = (args.url or settings.public_url).rstrip("/") + "/api/routes"
    headers = {"Authorization": f"Bearer {settings.api_token}"}
    try:
        with httpx.Client(headers=headers, timeout=10) as http:
            if args.action == "list":
                reply = http.get(base)
            elif args.action == "get":
                reply = http.get(f"{base}/{args.number}")
            elif args.action == "delete":
                reply = http.delete(f"{base}/{args.number}")
            else:
                reply = http.put(f"{base}/{args.number}", json=_route_body(args))
    except httpx.TransportError as exc:
        print(f"routes: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if reply.status_code == 204:
        print(f"deleted the route for {args.number}")
        return 0
    body = reply.json()
    if not reply.is_success:
        print(f"routes: HTTP {reply.status_code}: {body.get('detail', body)}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2, sort_keys=True))
    return 0

"""Commands between instances: ask the instance that owns a call to act on it, and get its answer.

Each instance subscribes to its own channel. `CommandBus.send` publishes
``{request_id, reply_to, command}`` there and waits for the reply on a per-request list, which
the owner fills with its handler's result (and which expires on its own if the sender gave up).
Pub/sub says how many instances received a message, so "nobody owns that channel" is known at
once instead of after a timeout.

A command for this instance itself goes straight to the handler, with the same JSON copying
and error shape as a remote one; with the embedded store that is the only instance there is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from infra.store.base import CommandSubscription, Store, StoreUnavailable, cancel_and_wait

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]

REPLY_TTL = 30.0


class CommandUndeliverable(Exception):
    """No instance listens on the target's channel (it is gone, or not started yet)."""


class CommandTimeout(Exception):
    """The target received the command but did not answer in time."""


def _json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(dict(value)))


class CommandBus:
    def __init__(
        self,
        store: Store,
        instance_id: str,
        *,
        reply_ttl: float = REPLY_TTL,
        retry_max: float = 5.0,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.reply_ttl = reply_ttl
        self.retry_max = retry_max
        self._handler: Handler | None = None
        self._subscription: CommandSubscription | None = None
        self._listener: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._warned = False
        self._delay = 0.1

    @property
    def listening(self) -> bool:
        """True while subscribed to this instance's channel."""
        return self._subscription is not None

    async def start(self, handler: Handler) -> None:
        """Subscribes and serves commands with `handler` until `aclose`.

        The first subscription is made before this returns, so a command sent right after is
        delivered; if the store is away it is retried in the background instead."""
        if self._listener is not None:
            raise RuntimeError("command bus already started")
        self._handler = handler
        await self._subscribe()
        self._listener = asyncio.create_task(self._listen(), name="command-bus")

    async def _subscribe(self) -> bool:
        try:
            self._subscription = await self.store.subscribe_commands(self.instance_id)
        except StoreUnavailable as exc:
            self._lost(exc)
            return False
        self._delay = 0.1
        if self._warned:
            log.info("command channel subscribed again")
            self._warned = False
        return True

    def _lost(self, exc: StoreUnavailable) -> None:
        if not self._warned:
            log.warning("command channel unavailable, resubscribing: %s", exc)
            self._warned = True

    async def _listen(self) -> None:
        while True:
            if self._subscription is None and not await self._subscribe():
                await self._back_off()
                continue
            assert self._subscription is not None
            try:
                message = await self._subscription.get()
            except StoreUnavailable as exc:
                self._lost(exc)
                await self._drop_subscription()
                await self._back_off()
                continue
            task = asyncio.create_task(self._serve(message), name="command")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _back_off(self) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self.retry_max)

    async def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.close()

    async def _serve(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        command = message.get("command")
        if not isinstance(request_id, str) or not isinstance(command, dict):
            log.warning("ignoring a malformed command message from %s", message.get("reply_to"))
            return
        reply = await self._run_handler(command)
        try:
            await self.store.push_reply(request_id, reply, self.reply_ttl)
        except StoreUnavailable as exc:
            log.warning("could not reply to command %s: %s", request_id, exc)

    async def _run_handler(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._handler is not None
        try:
            result = await self._handler(command)
        except Exception as exc:
            # The sender gets an answer either way; it must never wait for a crash.
            log.exception("command handler failed for %s", command.get("op", "command"))
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        if not isinstance(result, Mapping):
            return {"ok": False, "error": f"handler returned {type(result).__name__}, not a dict"}
        try:
            return _json_copy(result)
        except TypeError as exc:
            return {"ok": False, "error": f"handler reply is not JSON: {exc}"}

    async def send(
        self,
        instance_id: str,
        command: Mapping[str, Any],
        timeout: float = 5.0,  # noqa: ASYNC109 - the wait happens in Redis (BLPOP)
    ) -> dict[str, Any]:
        """Runs `command` on `instance_id` and returns its handler's reply.

        Raises `CommandUndeliverable` when nobody listens there, `CommandTimeout` when no
        reply came within `timeout`, `StoreUnavailable` when the store is away."""
        body = _json_copy(command)
        if instance_id == self.instance_id and self._handler is not None:
            # A task, as for a remote command: a sender that stops waiting does not cancel it.
            task = asyncio.create_task(self._run_handler(body), name="command")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(task)
            except TimeoutError:
                raise CommandTimeout(f"no reply from {instance_id} in {timeout} s") from None

        request_id = uuid.uuid4().hex
        message = {"request_id": request_id, "reply_to": self.instance_id, "command": body}
        if await self.store.publish_command(instance_id, message) == 0:
            raise CommandUndeliverable(f"instance {instance_id!r} is not listening")
        try:
            # The margin covers the round trip; the store's own wait ends at `timeout`.
            async with asyncio.timeout(timeout + 2.0):
                reply = await self.store.wait_reply(request_id, timeout)
        except TimeoutError:
            reply = None
        if reply is None:
            raise CommandTimeout(f"no reply from {instance_id} in {timeout} s")
        return reply

    async def aclose(self, grace: float = 2.0) -> None:
        """Stops listening; commands being handled get `grace` seconds to finish."""
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None
        await self._drop_subscription()
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
            for task in pending:
                await cancel_and_wait(task)
        self._handler = None

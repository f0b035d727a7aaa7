"""The RabbitMQ invalidation bus (aio-pika).

Exchange: ``<key_prefix>:events``, type fanout. Every instance declares its own server-named,
exclusive, auto-deleted queue bound to it, so each instance gets every event and a dead instance
leaves nothing behind. Heartbeats are on (``heartbeat`` seconds); a connection closed by the
broker is noticed at once, a silently frozen one after about three heartbeats, and the store's
epoch check bounds staleness meanwhile.

Publishing shares the subscriber's connection (on its own channel) when there is one, so a
revoke costs no handshake; otherwise a connection is opened on first use and again after a
failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError

from authz.errors import BusError

__all__ = ["AmqpBus", "event_exchange"]

# ChannelInvalidStateError (a RuntimeError) is what using a channel of a closed connection raises.
_CLOSE_SECONDS = 5.0
_FAILURES = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError, ConnectionError)


def event_exchange(key_prefix: str) -> str:
    return f"{key_prefix}:events"


class AmqpBus:
    def __init__(
        self, url: str, *, key_prefix: str, timeout: float, heartbeat: float, name: str = ""
    ):
        self._url = url
        self._exchange_name = event_exchange(key_prefix)
        self._timeout = timeout
        self._heartbeat = heartbeat
        # Shown in the broker's connection list, to tell instances apart.
        self._name = name or "doma-gateway"
        self._publisher: tuple[AbstractConnection, AbstractExchange] | None = None
        self._publish_lock = asyncio.Lock()

    async def _connect(self, role: str) -> AbstractConnection:
        try:
            return await aio_pika.connect(
                self._url,
                timeout=self._timeout,
                heartbeat=max(round(self._heartbeat), 1),
                client_properties={"connection_name": f"{self._name} {role}"},
            )
        except _FAILURES as exc:
            raise BusError(f"cannot connect to the broker ({type(exc).__name__})") from exc

    async def _exchange(self, connection: AbstractConnection) -> AbstractExchange:
        channel = await connection.channel()
        return await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.FANOUT, durable=True, timeout=self._timeout
        )

    async def publish(self, payload: bytes) -> None:
        async with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher[0].is_closed:
                        connection = await self._connect("publisher")
                        self._publisher = (connection, await self._exchange(connection))
                    await self._publisher[1].publish(
                        aio_pika.Message(
                            payload, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT
                        ),
                        routing_key="",
                        timeout=self._timeout,
                    )
                    return
                except (BusError, *_FAILURES) as exc:
                    await self._close_publisher()
                    # A pooled connection may have died quietly: one fresh attempt, then give up.
                    if attempt == 2:
                        raise BusError(f"publish failed ({type(exc).__name__})") from exc

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[bytes]]:
        connection = await self._connect("subscriber")
        received: asyncio.Queue[bytes] = asyncio.Queue()
        # Set when the broker closes the connection or heartbeats stop (aio-pika calls back).
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())

        async def on_message(message: AbstractIncomingMessage) -> None:
            received.put_nowait(message.body)

        try:
            exchange = await self._exchange(connection)
            channel = exchange.channel
            queue = await channel.declare_queue(
                "", exclusive=True, auto_delete=True, timeout=self._timeout
            )
            await queue.bind(exchange, timeout=self._timeout)
            await queue.consume(on_message, no_ack=True, timeout=self._timeout)
            if self._publisher is None or self._publisher[0].is_closed:
                # Publish over this connection too: the first revoke then pays no handshake.
                self._publisher = (connection, await self._exchange(connection))
        except _FAILURES as exc:
            await _close(connection)
            raise BusError(f"cannot subscribe ({type(exc).__name__})") from exc
        try:
            yield _until_lost(lost, received)
        finally:
            await _close(connection)

    async def _close_publisher(self) -> None:
        if self._publisher is not None:
            await _close(self._publisher[0])
            self._publisher = None

    async def close(self) -> None:
        async with self._publish_lock:
            await self._close_publisher()


async def _until_lost(lost: asyncio.Event, received: asyncio.Queue[bytes]) -> AsyncIterator[bytes]:
    closed = asyncio.ensure_future(lost.wait())
    getter: asyncio.Future[bytes] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(received.get())
            await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                raise BusError("broker connection closed")
            yield getter.result()
    finally:
        closed.cancel()
        if getter is not None:
            getter.cancel()


async def _close(connection: AbstractConnection) -> None:
    # Bounded: closing waits for the broker's Close-Ok, which a frozen broker never sends.
    try:
        async with asyncio.timeout(_CLOSE_SECONDS):
            await connection.close()
    except _FAILURES:
        return

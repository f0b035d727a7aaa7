"""The gateway's HTTP/1.1 transport against real servers: framing, reuse, HEAD, TLS, errors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.http1_transport import Http1Transport
from tests.support.upstreams import ScriptedUpstream


def _client(transport: Http1Transport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=5)


async def test_target_is_sent_byte_for_byte_and_connections_are_reused(upstream: ScriptedUpstream):
    transport = Http1Transport()
    async with _client(transport) as client:
        first = await client.get(f"{upstream.url}/echo/a%3Ab/~x?q=%2F")
        second = await client.get(f"{upstream.url}/echo/again")
        # Both exchanges used one pooled connection, now idle again.
        assert sum(len(idle) for idle in transport._idle.values()) == 1
    assert first.json()["path"] == "/echo/a%3Ab/~x?q=%2F"
    assert first.json()["headers"]["host"] == f"127.0.0.1:{upstream.port}"
    assert second.status_code == 200


async def test_chunked_and_length_bodies_and_head(upstream: ScriptedUpstream):
    async with _client(Http1Transport()) as client:
        chunked = await client.get(f"{upstream.url}/download/300000")
        sized = await client.get(f"{upstream.url}/download/1000?length=1")
        head = await client.head(f"{upstream.url}/echo")
        after = await client.get(f"{upstream.url}/echo")
    assert len(chunked.content) == 300_000
    assert len(sized.content) == 1000
    assert head.status_code == 200 and head.content == b""
    assert after.status_code == 200


async def test_streamed_request_body_is_sent_chunked(upstream: ScriptedUpstream):
    async def body() -> Iterator[bytes]:  # type: ignore[misc]
        for _ in range(10):
            yield b"x" * 100_000

    async with _client(Http1Transport()) as client:
        reply = await client.post(f"{upstream.url}/upload", content=body())
    assert reply.json() == {"received": 1_000_000}


async def test_a_refused_connection_is_a_connect_error():
    async with _client(Http1Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/")


async def test_read_timeout_while_waiting_for_the_head(upstream: ScriptedUpstream):
    async with httpx.AsyncClient(
        transport=Http1Transport(), timeout=httpx.Timeout(5, read=0.2)
    ) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{upstream.url}/slow/1")


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_endpoints_are_verified(tmp_path: Path):
    cert_file, key_file = _certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    with ScriptedUpstream("tls", tls=server_tls) as upstream:
        trusting = ssl.create_default_context(cafile=str(cert_file))
        async with _client(Http1Transport(tls=trusting)) as client:
            reply = await client.get(f"{upstream.url}/echo")
        assert reply.status_code == 200 and reply.json()["upstream"] == "tls"
        async with _client(Http1Transport()) as client:
            with pytest.raises(httpx.ConnectError, match="TLS"):
                await client.get(f"{upstream.url}/echo")


async def test_a_body_delimited_by_the_connection_close_is_complete():
    """HTTP/1.0-style answers: no Content-Length, not chunked, the end is the close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, _client(Http1Transport()) as client:
        reply = await client.get(f"http://127.0.0.1:{port}/")
    assert reply.text == "until the end"


@contextlib.asynccontextmanager
async def _scripted(answers: list[bytes]) -> AsyncIterator[tuple[int, list[asyncio.Task[None]]]]:
    """An upstream answering the n-th request it reads with ``answers[n]`` (raw bytes, sent in
    parts split at ``<pause>``); yields its port and one task per connection it accepted."""
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while answers:
                await reader.readuntil(b"\r\n\r\n")
                for index, part in enumerate(answers.pop(0).split(b"<pause>")):
                    if index:
                        await asyncio.sleep(0.05)
                    writer.write(part)
                    await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], handlers
    finally:
        server.close()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)
        await server.wait_closed()


async def test_informational_answers_are_skipped_for_the_final_one():
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\n<pause>HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
        b"<pause>HTTP/1.1 201 Created\r\nset-cookie: s=1\r\ncontent-length: 7\r\n\r\ncreated",
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext",
    ]
    async with _scripted(answers) as (port, connections), _client(Http1Transport()) as client:
        first = await client.post(f"http://127.0.0.1:{port}/a", content=b"x")
        second = await client.get(f"http://127.0.0.1:{port}/b")
    assert (first.status_code, first.text, first.headers["set-cookie"]) == (201, "created", "s=1")
    assert "link" not in first.headers
    assert (second.status_code, second.text) == (200, "next")
    assert len(connections) == 1  # the connection stays usable after the interim answers


async def test_bytes_after_an_answer_are_nobodys_and_retire_the_connection():
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        b"HTTP/1.1 200 OK\r\nx-injected: yes\r\ncontent-length: 8\r\n\r\nINJECTED",
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
    ]
    async with _scripted(answers) as (port, connections), _client(Http1Transport()) as client:
        first = await client.get(f"http://127.0.0.1:{port}/a")
        second = await client.get(f"http://127.0.0.1:{port}/b")
    assert (first.text, "x-injected" in first.headers) == ("hello", False)
    assert second.text == "second"
    assert len(connections) == 2  # the first connection was not handed to the second request


async def test_a_switching_protocols_answer_is_a_protocol_error():
    answers = [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"]
    async with _scripted(answers) as (port, _), _client(Http1Transport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/")

"""Raw HTTP/1.1 requests: the path is sent exactly as given (no client-side normalization)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    port: int,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> Reply:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        # A Host given by the caller replaces the one http.client would add: two are a 400.
        own_host = any(name.lower() == "host" for name, _ in headers or [])
        connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers or []:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()

"""Headers policies add to the response, collected per request and sent once by the gateway.

CORS and rate limits both add headers to the answer. Wrapping ``send`` would cost every response
message one more layer per policy; instead :class:`gateway.app.GatewayApp` gives each request
one list under :data:`SCOPE_KEY` (shared by shallow copies of the scope), policies extend it,
and the app adds it to the response start, whichever answer that is. So these headers come after
any ``headers`` policy's response rules, which do not see them.
"""

from __future__ import annotations

__all__ = ["SCOPE_KEY"]

SCOPE_KEY = "doma.response_headers"

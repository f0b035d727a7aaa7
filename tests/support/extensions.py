"""Extensions for tests: each records its calls, then answers as its settings say."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from gateway.extensions import Call, Outcome, add_headers, deny, route_to

# (extension name, point, headers it saw) in call order, across every recorder.
CALLS: list[tuple[str, str, dict[str, str]]] = []


class Recorder:
    def __init__(self, settings: Mapping[str, Any]):
        self.name = str(settings.get("name", "recorder"))
        self.settings = settings

    async def __call__(self, call: Call) -> Outcome | None:
        CALLS.append((self.name, call.point, dict(call.headers)))
        settings = self.settings
        if "when_header" in settings and settings["when_header"] not in call.headers:
            return None
        if "sleep" in settings:
            await asyncio.sleep(float(settings["sleep"]))
        if settings.get("raise"):
            raise RuntimeError("broken extension")
        if "deny" in settings:
            return deny(str(settings["deny"]), int(settings.get("status", 403)))
        if "route_to" in settings:
            return route_to(str(settings["route_to"]))
        if "header" in settings:
            return add_headers(**{str(settings["header"]).replace("-", "_"): self.name})
        if settings.get("garbage"):
            return "allow"  # type: ignore[return-value]
        return None


def recorder(settings: Mapping[str, Any]) -> Recorder:
    return Recorder(settings)


def not_a_factory_result(settings: Mapping[str, Any]) -> object:
    return 42


_RAISES: dict[str, type[BaseException]] = {
    "cancelled": asyncio.CancelledError,
    "system_exit": SystemExit,
    "keyboard_interrupt": KeyboardInterrupt,
}


class Misbehaving:
    """Does one wrong thing, named by ``settings["mode"]``, on paths containing ``when_path``."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = settings

    async def __call__(self, call: Call) -> Outcome | None:
        settings = self.settings
        if str(settings.get("when_path", "")) not in call.path:
            return None
        mode = settings["mode"]
        claims: Any = call.claims
        if mode == "grant_scope":
            claims["scope"] = "rides.admin"
        elif mode == "grant_role":
            claims["realm"]["roles"].append("rides.admin")
        elif mode == "swallow_cancel":
            # Keeps going however often it is cancelled, then answers too late.
            deadline = asyncio.get_running_loop().time() + float(settings["for"])
            while asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)
            return deny("too_late")
        elif mode == "set_header":
            return Outcome(headers=((str(settings["name"]), "v"),))
        elif mode in _RAISES:
            raise _RAISES[mode]()
        return None


def misbehaving(settings: Mapping[str, Any]) -> Misbehaving:
    return Misbehaving(settings)


def unreachable_store(settings: Mapping[str, Any]) -> Recorder:
    raise RuntimeError("cannot reach the feature store")

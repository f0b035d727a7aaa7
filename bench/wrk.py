"""Running wrk and reading its result as numbers (a Lua ``done`` hook prints them as JSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WrkResult", "run_wrk", "wrk_binary"]

_MARK = "WRK_RESULT "
# wrk counts a response as a status error when its status is 400 or above.
_DONE = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    "{mark}", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


# Fixed-rate load: each connection waits an exponentially distributed gap (mean in ms, the
# placeholder) before each request, so the connections together send a Poisson stream at the
# wanted rate, not synchronized bursts. wrk takes the delay in whole milliseconds.
_PACED = """\
delay = function()
  return -math.log(1 - math.random()) * {mean_ms}
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise FileNotFoundError(
            "wrk not found: apt-get install -y wrk (make bench-authz does this)"
        )
    return found


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    headers: dict[str, str],
    workdir: Path,
    rate: float | None = None,
) -> WrkResult:
    """wrk as fast as it goes, or with ``rate``, about that many requests per second in all.

    At a fixed rate a connection sends its next request only after the last answer, so a stall
    longer than the mean gap (``connections / rate``) delays the requests behind it instead of
    counting each of them late: keep that gap well above the latencies measured.
    """
    done_script = _DONE.replace("{mark}", _MARK)
    if rate is None:
        script = workdir / "wrk-done.lua"
    else:
        mean_ms = connections * 1000 / rate
        script = workdir / f"wrk-paced-{mean_ms:g}.lua"
        done_script += _PACED.replace("{mean_ms}", f"{mean_ms:g}")
    if not script.exists():
        script.write_text(done_script)
    whole_seconds = max(round(seconds), 1)  # wrk reads whole seconds only: "1.5s" is refused
    argv = [
        wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{whole_seconds}s",
        "--timeout", "5s", "-s", str(script),
    ]  # fmt: skip
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(
            f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout[-300:]}"
        )
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non_2xx=raw["status_errors"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )

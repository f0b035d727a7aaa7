"""``/admin/map`` in a real headless Chromium: it loads, shows every domain with live state, and
logs no console error."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import aiohttp
import pytest

from doma_gateway.echo import EchoServer
from tests.support.chromium import Browser, open_page
from tests.support.http import send
from tests.support.processes import ServerProcess, start
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


def routes(echo: int, refused: int) -> str:
    return f"""\
layers: [infrastructure, business-logic, product]
domains:
  image:
    layer: infrastructure
    owner: team-image
    auth: bypass
    upstream: image-api
    versions:
      v1:
        routes:
          - {{name: images, path: /images/*}}
  character:
    layer: business-logic
    owner: team-character
    auth: bypass
    depends_on: [image]
    upstream: character-api
    versions:
      v1:
        routes:
          - {{name: catalog, path: /catalog/**}}
  scan:
    layer: business-logic
    owner: team-scan
    auth: bypass
    depends_on: [character, image]
    upstream: scan-api
    versions:
      v1:
        routes:
          - {{name: scans, path: /scans}}
      v2:
        routes:
          - {{name: scans, path: /scans}}
          - {{name: result, path: /scans/*}}
  my:
    layer: product
    owner: team-my
    auth: bypass
    depends_on: [scan]
    upstream: scan-api
    versions:
      v1:
        routes:
          - {{name: all, path: /**}}
upstreams:
  image-api: {{endpoints: ["http://127.0.0.1:{echo}"]}}
  scan-api: {{endpoints: ["http://127.0.0.1:{echo}"]}}
  character-api:
    endpoints: ["http://127.0.0.1:{refused}"]
    circuit_breaker: {{failures: 1, reset_seconds: 600}}
"""


@pytest.fixture
def gateway(tmp_path) -> Iterator[ServerProcess]:
    echo = EchoServer().start()
    path = tmp_path / "routes.yaml"
    path.write_text(routes(echo.port, free_port()))
    server = start(
        ["serve", "--routes", str(path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    yield server
    server.stop()
    echo.stop()


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "profile")
    yield browser
    browser.close()


async def test_the_map_page_shows_every_domain_with_live_state_and_no_console_error(
    gateway, browser, tmp_path
):
    http, admin = gateway.port("http"), gateway.port("admin")
    # Traffic to count, and a refused upstream whose breaker opens at its first failure.
    for _ in range(3):
        assert send(http, "/api/v1/image/images/1").status == 200
    assert send(http, "/api/v1/character/catalog/x").status in (502, 503)
    async with aiohttp.ClientSession() as session:
        page = await open_page(session, browser, f"http://127.0.0.1:{admin}/admin/map")
        try:
            await page.wait_for("document.body && document.body.dataset.live === '1'")
            shown = await page.evaluate(
                "Array.from(document.querySelectorAll('svg g.domain'))"
                ".map(g => g.dataset.domain).sort()"
            )
            assert shown == ["character", "image", "my", "scan"]
            layers = await page.evaluate(
                "Array.from(document.querySelectorAll('svg g.layer')).map(g => g.id)"
            )
            assert layers == ["layer-product", "layer-business-logic", "layer-infrastructure"]
            edges = await page.evaluate(
                "Array.from(document.querySelectorAll('svg path.dependency')).map(p => p.id)"
            )
            assert "edge-scan_to_character" in edges and "edge-my_to_scan" in edges
            health = await page.wait_for(
                "(() => { const h = {}; document.querySelectorAll('tr[data-domain]').forEach("
                "r => h[r.dataset.domain] = r.querySelector('.health').textContent);"
                "return h.character === 'down' ? h : null; })()"
            )
            assert health == {
                "character": "down",
                "image": "healthy",
                "my": "healthy",
                "scan": "healthy",
            }
            assert "character-api: open" in await page.evaluate(
                "document.querySelector('tr[data-domain=\"character\"] .breaker').textContent"
            )
            # A rate appears once two polls have been seen.
            await page.wait_for(
                "document.querySelector('tr[data-domain=\"image\"] .rate').textContent !== '-'"
            )
            shot = await page.send("Page.captureScreenshot", format="png")
            (tmp_path / "map.png").write_bytes(base64.b64decode(shot["data"]))
            assert (tmp_path / "map.png").stat().st_size > 5_000
            assert page.errors() == []
        finally:
            await page.close()


def test_the_map_state_is_json_and_the_page_forbids_inline_script(gateway):
    admin = gateway.port("admin")
    page = send(admin, "/admin/map")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.body.decode()
    state = send(admin, "/admin/map/state").json()
    assert set(state["domains"]) == {"image", "character", "scan", "my"}
    assert state["domains"]["scan"]["upstreams"] == ["scan-api"]

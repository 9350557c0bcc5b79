"""Real Chromium (Debian's package) driven by Playwright against editor + gateway processes."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support.processes import ARTIFACTS, ROOT, EditorInstance, GatewayInstance

STATIC = ROOT / "services" / "editor" / "collab" / "static" / "collab"
BUNDLE = [STATIC / "editor.js", STATIC / "index.js", STATIC / "app.css"]
SCREENSHOTS = ARTIFACTS / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# Seconds Playwright's expectations wait (reconnects back off up to 2.5 s between tries).
expect.set_options(timeout=10_000)


@pytest.fixture(autouse=True)
def browser_bundle() -> None:
    """The pages load the esbuild bundle: without it every test here is meaningless."""
    missing = [path.name for path in BUNDLE if not path.is_file()]
    if missing:
        pytest.fail(
            f"the browser bundle lacks {', '.join(missing)} in {STATIC.relative_to(ROOT)}: "
            "run `make install` (or `npm run build`)"
        )


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; never a browser downloaded by Playwright."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (apt package chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def start_service(
    editors: list[EditorInstance],
    gateways: list[GatewayInstance],
    database_url: str,
    redis_url: str,
    *,
    workers: int,
    editor_env: dict[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
) -> GatewayInstance:
    """An editor behind the gateway, both stopped after the test: browse the gateway."""
    editor = EditorInstance(
        "browser-editor",
        database_url=database_url,
        redis_url=redis_url,
        workers=workers,
        extra_env=editor_env,
    ).start()
    editors.append(editor)
    gateway = GatewayInstance(
        "browser-gateway", upstreams=[editor.base_url], extra_env=gateway_env
    ).start()
    gateways.append(gateway)
    return gateway


@pytest.fixture
def service(editors, gateways, pg_database, redis_server) -> GatewayInstance:
    """One editor with two workers (sharing rooms through Redis) behind the gateway."""
    return start_service(editors, gateways, pg_database.url, redis_server.url, workers=2)


@pytest.fixture
def one_worker_service(editors, gateways, pg_database, redis_server) -> GatewayInstance:
    """One editor process behind the gateway.

    GET /api/docs/<id> counts the people in the room of the process that answers it;
    another worker of the same editor, which holds no room for the document, says 0.
    With a single worker the list's "people connected" column is exact.
    """
    return start_service(editors, gateways, pg_database.url, redis_server.url, workers=1)


async def person(browser: Browser, name: str, color: str) -> BrowserContext:
    """A browser context (its own storage, like another person's browser) with an identity."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    identity = json.dumps({"name": name, "color": color})
    await context.add_init_script(
        "if (!localStorage.getItem('collab.identity'))"
        f" localStorage.setItem('collab.identity', {json.dumps(identity)})"
    )
    return context


async def open_editor(context: BrowserContext, url: str) -> Page:
    """Open the editor page and wait until it is connected and synced."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await wait_connected(page)
    assert not errors, errors
    return page


async def wait_connected(page: Page) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")


async def text_of(page: Page) -> str:
    """The editor's whole text, as CodeMirror holds it."""
    return await page.evaluate("() => window.collab.view.state.doc.toString()")


async def wait_for_text(
    page: Page, *, contains: str | None = None, lacks: str | None = None, equals: str | None = None
) -> None:
    """Wait until the editor's text has (or lacks, or is exactly) the given text."""
    await page.wait_for_function(
        """([contains, lacks, equals]) => {
            const text = window.collab.view.state.doc.toString()
            return (contains === null || text.includes(contains))
                && (lacks === null || !text.includes(lacks))
                && (equals === null || text === equals)
        }""",
        arg=[contains, lacks, equals],
        timeout=10_000,
    )


async def type_at(page: Page, where: str, text: str, *, paste: bool = False) -> None:
    """Put the caret at the start or end of the document and type (or paste) the text."""
    await page.locator(".cm-content").click()
    await page.keyboard.press("Control+Home" if where == "start" else "Control+End")
    if paste:
        await page.keyboard.insert_text(text)
    else:
        await page.keyboard.type(text)


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name))

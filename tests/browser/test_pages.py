"""The document list and its open form, in Chromium and without JavaScript."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from playwright.async_api import expect

from tests.browser.conftest import (
    open_editor,
    person,
    screenshot,
    type_at,
    wait_connected,
    wait_for_text,
)


def fetch(url: str) -> tuple[int, str]:
    """GET without following redirects: status and body (or Location for redirects)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        body = error.headers.get("Location") or error.read().decode()
        return error.code, body


async def test_the_list_shows_documents_and_people_and_opens_documents_by_name(
    chromium, one_worker_service
):
    service = one_worker_service
    ada_context = await person(chromium, "Ada", "#e5484d")
    ada = await open_editor(ada_context, f"{service.base_url}/d/roadmap-2026")
    await type_at(ada, "end", "Q1: ship the browser editor")

    visitor_context = await person(chromium, "Bob", "#0090ff")
    page = await visitor_context.new_page()
    await page.goto(service.base_url + "/")
    row = page.locator("tr[data-doc='roadmap-2026']")
    await expect(row.get_by_role("link", name="roadmap-2026")).to_have_attribute(
        "href", "/d/roadmap-2026"
    )
    await expect(row.locator("td.num")).to_have_text(re.compile(r"\d+\sbytes"))
    await expect(row.locator("time")).to_have_text(re.compile(r"just now|second"))
    await expect(row.locator("[data-people]")).to_have_text("1 person")
    await screenshot(page, "document-list.png")

    # A name the service would refuse gets a clear message, and nothing is opened.
    await page.get_by_label("Document name").fill("my notes!")
    await page.get_by_role("button", name="Open").click()
    await expect(page.locator("#doc-error")).to_contain_text("is not a valid document name")
    await expect(page.get_by_label("Document name")).to_have_attribute("aria-invalid", "true")
    assert page.url == service.base_url + "/"

    await page.get_by_label("Document name").fill("  fresh.notes  ")
    await page.get_by_role("button", name="Open").click()
    await page.wait_for_url(service.base_url + "/d/fresh.notes")
    await wait_connected(page)
    await expect(page.locator(".doc-title")).to_have_text("fresh.notes")
    await page.get_by_role("link", name="Documents").click()
    await page.wait_for_url(service.base_url + "/")
    for context in (ada_context, visitor_context):
        await context.close()


async def test_pages_without_javascript_validate_names_too(service):
    status, body = fetch(service.base_url + "/?doc=team%2Fnotes")
    assert status == 400
    assert "“team/notes” is not a valid document name" in body
    status, location = fetch(service.base_url + "/?doc=+weekly.sync+")
    assert (status, location) == (302, "/d/weekly.sync")
    status, body = fetch(service.base_url + "/d/" + "x" * 129)
    assert status == 404
    assert "is not a valid document name" in body
    status, body = fetch(service.base_url + "/d/weekly.sync")
    assert status == 200
    assert '<script type="module" src="/static/collab/editor.js">' in body
    assert 'id="collab-config"' in body


async def test_the_editor_survives_a_reload_of_an_unknown_document(chromium, service):
    context = await person(chromium, "Ada", "#e5484d")
    page = await open_editor(context, f"{service.base_url}/d/never-written")
    assert await page.locator("#undo").is_disabled()
    await type_at(page, "end", "first words")
    await expect(page.locator("#undo")).to_be_enabled()
    await page.reload()
    await wait_connected(page)
    await wait_for_text(page, equals="first words")
    await context.close()

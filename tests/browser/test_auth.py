"""With authentication on: sign in, get a token for the document, edit; read-only access."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from tests.browser.conftest import (
    person,
    start_service,
    text_of,
    type_at,
    wait_connected,
    wait_for_text,
)
from tests.support.processes import GatewayInstance, run_manage

SECRET = "browser-auth-secret-" + "z" * 40
AUTH_ENV = {"COLLAB_AUTH_REQUIRED": "1", "COLLAB_TOKEN_SECRET": SECRET}
PASSWORD = "correct-horse-battery-staple"
CREATE_READER = """
from django.contrib.auth.models import Permission, User
user = User.objects.create_user("rita", password="{password}")  # not staff: a plain account
user.user_permissions.add(Permission.objects.get(codename="view_document"))
"""


@pytest.fixture
def secured(editors, gateways, pg_database, redis_server) -> GatewayInstance:
    """Editor and gateway requiring tokens; a superuser `ada`, a read-only user `rita`."""
    env = {"DATABASE_URL": pg_database.url, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    run_manage(
        ["createsuperuser", "--no-input", "--username", "ada", "--email", "ada@example.com"], env
    )
    run_manage(["shell", "-c", CREATE_READER.format(password=PASSWORD)], env)
    # One worker, so the list's people count is exact (see conftest.one_worker_service).
    return start_service(
        editors,
        gateways,
        pg_database.url,
        redis_server.url,
        workers=1,
        # Behind the gateway the public host arrives as X-Forwarded-Host; the CSRF checks
        # of the login form and of POST /api/tokens compare the page's Origin with it.
        editor_env={**AUTH_ENV, "DJANGO_USE_X_FORWARDED_HOST": "true"},
        gateway_env=AUTH_ENV,
    )


async def signed_in(browser: Browser, base_url: str, doc: str, username: str) -> BrowserContext:
    """A visitor sent to the login page by the editor, who signs in and comes back."""
    context = await person(browser, "not used when signed in", "#8e4ec6")
    page = await context.new_page()
    await page.goto(f"{base_url}/d/{doc}")
    await page.wait_for_url(f"{base_url}/accounts/login/?next=/d/{doc}")
    await page.locator("#id_username").fill(username)
    await page.locator("#id_password").fill(PASSWORD)
    await page.locator("input[type=submit]").click()
    await page.wait_for_url(f"{base_url}/d/{doc}")
    await wait_connected(page)
    return context


async def test_signed_in_users_get_tokens_and_readers_cannot_edit(chromium, secured):
    base = secured.base_url
    ada_context = await signed_in(chromium, base, "secret-plans", "ada")
    [ada] = ada_context.pages
    await expect(ada.locator("#my-name")).to_have_text("ada")
    await expect(ada.locator("#mode")).to_be_hidden()
    await type_at(ada, "end", "launch on Tuesday")

    rita_context = await signed_in(chromium, base, "secret-plans", "rita")
    [rita] = rita_context.pages
    await wait_for_text(rita, equals="launch on Tuesday")
    await expect(rita.locator("#mode")).to_be_visible()
    await expect(rita.locator("#notice")).to_contain_text("not edit")
    await expect(ada.locator("#people .person-name")).to_have_text(["ada", "rita"])
    await type_at(rita, "end", " or Wednesday")
    await type_at(ada, "start", "Plan: ")
    await wait_for_text(rita, equals="Plan: launch on Tuesday")
    assert await text_of(ada) == "Plan: launch on Tuesday"

    # The list needs a signed-in user too, and asks each document's people with a token.
    await ada.goto(base + "/")
    row = ada.locator("tr[data-doc='secret-plans']")
    await expect(row.locator("[data-people]")).to_have_text("1 person")
    anonymous = await chromium.new_context()
    page = await anonymous.new_page()
    await page.goto(base + "/")
    await expect(page.locator("table.docs")).to_have_count(0)
    await expect(page.get_by_role("link", name="Sign in").first).to_be_visible()
    for context in (ada_context, rita_context, anonymous):
        await context.close()


async def test_the_gateway_never_hands_one_visitors_session_to_another(chromium, secured):
    ada_context = await signed_in(chromium, secured.base_url, "any-doc", "ada")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(secured.base_url + "/admin/")  # no cookies at all
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    await ada_context.close()
    assert status == 302, "an anonymous request reached the admin as a signed-in user"

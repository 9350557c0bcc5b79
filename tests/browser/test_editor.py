"""People co-editing a document in real Chromium, through the gateway."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.browser.conftest import (
    SCREENSHOTS,
    open_editor,
    person,
    screenshot,
    text_of,
    type_at,
    wait_connected,
    wait_for_text,
)


async def test_two_people_see_each_others_text_cursors_and_names(chromium, service):
    url = f"{service.base_url}/d/meeting-notes"
    ada_context = await person(chromium, "Ada", "#e5484d")
    bob_context = await person(chromium, "Bob", "#0090ff")
    ada = await open_editor(ada_context, url)
    bob = await open_editor(bob_context, url)

    await type_at(ada, "end", "Agenda\n- budget review")
    await wait_for_text(bob, contains="budget review")
    await expect(bob.locator(".cm-line", has_text="budget review")).to_be_visible()
    await type_at(bob, "end", "\n- hiring plan")
    await wait_for_text(ada, contains="hiring plan")
    assert await text_of(ada) == await text_of(bob) == "Agenda\n- budget review\n- hiring plan"

    # Presence: both listed on both sides, you first; each sees the other's named caret.
    await expect(ada.locator("#people .person-name")).to_have_text(["Ada", "Bob"])
    await expect(bob.locator("#people .person-name")).to_have_text(["Bob", "Ada"])
    await expect(ada.locator("#people-count")).to_have_text("2")
    await expect(ada.locator(".cm-ySelectionInfo")).to_have_text("Bob")
    await expect(bob.locator(".cm-ySelectionInfo")).to_have_text("Ada")

    # A visitor renames themselves inline, and the others see the new name at once.
    await ada.locator("#my-name").fill("Ada Lovelace")
    await expect(bob.locator("#people")).to_contain_text("Ada Lovelace")
    await expect(bob.locator(".cm-ySelectionInfo")).to_have_text("Ada Lovelace")
    await ada.locator("#my-name").press("Enter")

    # Bob selects a word: Ada sees his selection highlighted.
    await bob.locator(".cm-content").click()
    await bob.keyboard.press("Control+Home")
    await bob.keyboard.press("Shift+End")
    await expect(ada.locator(".cm-ySelection")).to_have_count(1)
    await ada.locator(".cm-content").click()
    await ada.keyboard.press("Control+End")
    await screenshot(ada, "editor-two-people.png")
    assert (SCREENSHOTS / "editor-two-people.png").stat().st_size > 10_000

    # A reload keeps the content (it comes back from the service).
    await bob.reload()
    await wait_connected(bob)
    await wait_for_text(bob, contains="hiring plan")
    assert await text_of(bob) == "Agenda\n- budget review\n- hiring plan"

    # Bob leaves: Ada's page no longer lists him, nor shows his caret.
    await bob_context.close()
    await expect(ada.locator("#people .person")).to_have_count(1)
    await expect(ada.locator("#people-count")).to_have_text("1")
    await expect(ada.locator(".cm-ySelectionInfo")).to_have_count(0)
    await ada_context.close()


async def test_a_late_joiner_gets_everything_and_undo_touches_only_your_own_edits(
    chromium, service
):
    url = f"{service.base_url}/d/late~joiner.v2"
    ada_context = await person(chromium, "Ada", "#e5484d")
    bob_context = await person(chromium, "Bob", "#0090ff")
    ada = await open_editor(ada_context, url)
    bob = await open_editor(bob_context, url)
    lines = [f"line {number} " + "lorem ipsum " * 3 for number in range(1, 21)]
    await type_at(ada, "end", "\n".join(lines[:10]), paste=True)
    await wait_for_text(bob, contains="line 10")
    await type_at(bob, "end", "\n" + "\n".join(lines[10:]), paste=True)
    await wait_for_text(ada, contains="line 20")
    full = "\n".join(lines)

    cleo_context = await person(chromium, "Cleo", "#30a46c")
    cleo = await open_editor(cleo_context, url)
    assert await text_of(cleo) == full
    await expect(cleo.locator("#people .person-name")).to_have_text(["Cleo", "Ada", "Bob"])

    # Undo in Cleo's page after everyone typed: only Cleo's own words go away.
    await asyncio.sleep(0.6)  # the undo manager groups edits closer than 500 ms
    await type_at(cleo, "start", "DRAFT ")
    await wait_for_text(ada, contains="DRAFT line 1")
    await cleo.keyboard.press("Control+z")
    await wait_for_text(ada, lacks="DRAFT")
    for page in (ada, bob, cleo):
        assert await text_of(page) == full
    await cleo.keyboard.press("Control+Shift+Z")
    await wait_for_text(bob, contains="DRAFT line 1")
    await cleo.locator("#undo").click()
    await wait_for_text(bob, lacks="DRAFT")
    # Bob's undo leaves Ada's lines alone.
    await bob.keyboard.press("Control+z")
    await wait_for_text(ada, lacks="line 20")
    assert await text_of(ada) == "\n".join(lines[:10])
    for context in (ada_context, bob_context, cleo_context):
        await context.close()


async def test_offline_edits_on_both_sides_merge_when_back_online(chromium, service):
    url = f"{service.base_url}/d/offline-merge"
    ada_context = await person(chromium, "Ada", "#e5484d")
    bob_context = await person(chromium, "Bob", "#0090ff")
    ada = await open_editor(ada_context, url)
    bob = await open_editor(bob_context, url)
    await type_at(ada, "end", "shared line")
    await wait_for_text(bob, contains="shared line")

    await ada_context.set_offline(True)
    await expect(ada.locator("#status")).to_have_attribute("data-state", "offline")
    await expect(ada.locator("#status")).to_have_text("Offline")
    # Chromium's offline mode freezes open sockets rather than closing them, as a lost
    # network does: the page leaves by itself, and nothing it writes gets through.
    await type_at(ada, "end", "\nwritten offline by Ada")
    await type_at(bob, "start", "Bob, online: ")
    await asyncio.sleep(1)
    assert "Ada" not in await text_of(bob)
    assert "Bob" not in await text_of(ada)

    await ada_context.set_offline(False)
    await wait_connected(ada)
    merged = "Bob, online: shared line\nwritten offline by Ada"
    await wait_for_text(ada, contains="Bob, online: ")
    await wait_for_text(bob, contains="written offline by Ada")
    assert await text_of(ada) == await text_of(bob) == merged
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected")
    # Back online, Ada sees Bob again at once (not only when he next moves).
    await expect(ada.locator("#people .person-name")).to_have_text(["Ada", "Bob"])
    await expect(bob.locator("#people .person-name")).to_have_text(["Bob", "Ada"])
    for context in (ada_context, bob_context):
        await context.close()

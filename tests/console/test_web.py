"""The console over HTTP: login, sessions, CSRF, the read-only viewer, every page."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AppHarness
from tests.console.conftest import ADMIN, UI, VIEWER, login, seed, seed_delivered_now, status_of

PAGES = [
    "/",
    "/leads",
    "/leads/led_dead",
    "/dead-letters",
    "/playground",
    "/destinations",
    "/erase",
]


async def test_console_is_off_without_an_admin_token(make_app: Callable[..., Any]) -> None:
    h: AppHarness = await make_app()
    for path in ("/", "/login", "/leads"):
        assert (await h.client.get(UI + path)).status_code == 404
    assert (await h.client.post(f"{UI}/login", data={"token": "x"})).status_code == 404


@pytest.mark.parametrize("path", PAGES)
async def test_pages_need_a_session(console: AppHarness, path: str) -> None:
    response = await console.client.get(UI + path)
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"{UI}/login?next=")


async def test_post_without_a_session_is_refused(console: AppHarness) -> None:
    await seed(console)
    response = await console.client.post(f"{UI}/leads/led_dead/replay", data={"csrf": "x"})
    assert response.status_code == 401
    assert await status_of(console, "led_dead", "crm") == "dead"


async def test_login_sets_a_strict_session_cookie(console: AppHarness) -> None:
    response = await console.client.post(
        f"{UI}/login", data={"token": ADMIN, "next": "/dead-letters"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{UI}/dead-letters"
    cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", f"Path={UI}", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), attribute
    assert ADMIN not in cookie and ADMIN not in response.headers["location"]


async def test_login_next_never_leaves_the_console(console: AppHarness) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = await console.client.post(f"{UI}/login", data={"token": ADMIN, "next": target})
        assert response.headers["location"] == f"{UI}/", target


async def test_a_token_in_the_url_logs_nobody_in(console: AppHarness) -> None:
    response = await console.client.get(f"{UI}/login", params={"token": ADMIN})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert (await console.client.get(f"{UI}/")).status_code == 303


async def test_wrong_token_then_rate_limited(console: AppHarness) -> None:
    for _ in range(5):
        response = await console.client.post(f"{UI}/login", data={"token": "wrong"})
        assert response.status_code == 401
        assert "not valid" in response.text
    response = await console.client.post(f"{UI}/login", data={"token": ADMIN})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "set-cookie" not in response.headers


async def test_tokens_never_reach_the_log(
    console: AppHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await console.client.post(f"{UI}/login", data={"token": "wrong-guess-token"})
    await login(console.client, VIEWER)
    await login(console.client, ADMIN)
    text = caplog.text
    assert "console_login" in text and "admin.viewer_token" in text
    for secret in (ADMIN, VIEWER, "wrong-guess-token"):
        assert secret not in text


async def test_post_without_csrf_is_refused(console: AppHarness) -> None:
    await seed(console)
    await login(console.client)
    for data in ({}, {"csrf": "forged"}):
        response = await console.client.post(f"{UI}/leads/led_dead/replay", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert await status_of(console, "led_dead", "crm") == "dead"


async def test_csrf_of_another_session_is_refused(console: AppHarness) -> None:
    await seed(console)
    other = await login(console.client)
    await login(console.client)  # a new session replaces the cookie
    response = await console.client.post(f"{UI}/leads/led_dead/replay", data={"csrf": other})
    assert response.status_code == 403


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders(console: AppHarness, path: str) -> None:
    await seed(console)
    await login(console.client)
    response = await console.client.get(UI + path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<h1>" in response.text


async def test_timeline_masks_personal_fields_until_revealed(console: AppHarness) -> None:
    await seed(console)
    await login(console.client)
    html = (await console.client.get(f"{UI}/leads/led_dead")).text
    # Shown masked in the summary; the value itself only inside the closed <details>.
    assert "<summary" in html and "l***@example.com" in html
    assert re.search(
        r"<details class=\"reveal\"><summary[^>]*>[^<]*</summary><span class=\"value\">led_dead@example.com",
        html,
    )
    assert "HTTP 500: server error" in html


async def test_replay_one_destination(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client)
    response = await console.client.post(
        f"{UI}/leads/led_dead/replay", data={"csrf": csrf, "destination": "crm"}
    )
    assert response.status_code == 303
    assert "requeued" in response.headers["location"]
    assert await status_of(console, "led_dead", "crm") == "pending"
    assert await status_of(console, "led_dead", "archive") == "delivered"


async def test_bulk_replay_previews_then_requeues(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client)
    page = await console.client.get(f"{UI}/dead-letters", params={"destination": "crm"})
    assert "led_dead" in page.text and "led_ok" not in page.text

    preview = await console.client.post(
        f"{UI}/dead-letters/replay", data={"csrf": csrf, "scope": "all", "destination": "crm"}
    )
    assert preview.status_code == 200
    assert re.search(r'id="preview-count"><b>1</b> dead delivery will be requeued', preview.text)
    assert await status_of(console, "led_dead", "crm") == "dead"  # nothing changed yet

    confirm = await console.client.post(
        f"{UI}/dead-letters/replay",
        data={"csrf": csrf, "destination": "crm", "scope": "all", "confirm": "1"},
    )
    assert confirm.status_code == 303
    assert await status_of(console, "led_dead", "crm") == "pending"


async def test_viewer_can_look_but_not_act(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client, VIEWER)
    html = (await console.client.get(f"{UI}/leads/led_dead")).text
    assert "read-only" in html and "Replay all" not in html
    response = await console.client.post(
        f"{UI}/leads/led_dead/replay", data={"csrf": csrf, "destination": "crm"}
    )
    assert response.status_code == 403 and "read-only" in response.text
    assert await status_of(console, "led_dead", "crm") == "dead"
    # Reading actions stay open to the viewer.
    check = await console.client.post(f"{UI}/destinations/archive/check", data={"csrf": csrf})
    assert check.status_code == 200 and "writable" in check.text


async def test_playground_shows_mapping_errors_and_records(console: AppHarness) -> None:
    csrf = await login(console.client)
    bad = {"id": "led_bad", "data": {"first_name": "No Email"}}
    response = await console.client.post(
        f"{UI}/playground", data={"csrf": csrf, "lead": json.dumps(bad), "action": "run"}
    )
    assert response.status_code == 200
    row = re.search(r'data-destination="crm">.*?</tr>', response.text, re.S)
    assert row and "Mapping error" in row.group(0) and "Email" in row.group(0)

    invalid = await console.client.post(
        f"{UI}/playground", data={"csrf": csrf, "lead": "{not json", "action": "run"}
    )
    assert "invalid JSON at line 1" in invalid.text


async def test_playground_runs_an_edited_mapping_without_saving(console: AppHarness) -> None:
    csrf = await login(console.client)
    edited = "mapping:\n  Email: {source: data.email}\n  Source: {value: playground}\n"
    lead = {"id": "led_x", "data": {"email": "x@example.com"}}
    response = await console.client.post(
        f"{UI}/playground",
        data={
            "csrf": csrf,
            "lead": json.dumps(lead),
            "edit_destination": "crm",
            "edit_yaml": edited,
            "action": "run",
        },
    )
    assert "&#34;Source&#34;: &#34;playground&#34;" in response.text
    assert console.runtime.destination("crm").mapping.targets == ("Email",)  # type: ignore[union-attr]

    broken = await console.client.post(
        f"{UI}/playground",
        data={
            "csrf": csrf,
            "lead": json.dumps(lead),
            "edit_destination": "crm",
            "edit_yaml": "mapping:\n  Email: {source: data.email, transform: [nope]}\n",
            "action": "run",
        },
    )
    assert "destinations[0].mapping.Email" in broken.text


async def test_static_assets_are_hashed_and_immutable(console: AppHarness) -> None:
    await login(console.client)
    html = (await console.client.get(f"{UI}/")).text
    css = re.search(r'href="([^"]+/console\.css)"', html)
    assert css
    response = await console.client.get(css.group(1))
    assert response.status_code == 200
    assert "immutable" in response.headers["cache-control"]
    assert response.headers["content-type"].startswith("text/css")
    assert (
        await console.client.get(f"{UI}/static/0000000000000000/console.css")
    ).status_code == 404


async def test_logout_ends_the_session(console: AppHarness) -> None:
    csrf = await login(console.client)
    response = await console.client.post(f"{UI}/logout", data={"csrf": csrf})
    assert response.status_code == 303
    assert (await console.client.get(f"{UI}/")).status_code == 303


async def test_search_by_email_phone_and_status(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client)

    async def found(**fields: str) -> list[str]:
        response = await console.client.post(f"{UI}/leads", data={"csrf": csrf, **fields})
        assert response.status_code == 200, response.text
        return re.findall(r'<tr data-lead="([^"]+)"', response.text)

    assert await found(email="LED_DEAD@Example.com ") == ["led_dead"]
    assert await found(email="nobody@example.com") == []
    assert sorted(await found()) == ["led_dead", "led_ok"]
    assert await found(status="dead") == ["led_dead"]
    assert await found(status="dead", destination="archive") == []
    assert await found(lead_id="led_ok") == ["led_ok"]
    assert await found(received_to="2000-01-01T00:00") == []
    bad = await console.client.post(f"{UI}/leads", data={"csrf": csrf, "received_from": "soon"})
    assert bad.status_code == 400 and "received from" in bad.text


async def test_search_pages_with_a_cursor(
    console: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.console.pages import leads

    await seed(console)
    csrf = await login(console.client)
    monkeypatch.setattr(leads, "PAGE_SIZE", 1)
    first = await console.client.post(f"{UI}/leads", data={"csrf": csrf})
    cursor = re.search(r'name="cursor" value="([^"]+)"', first.text)
    assert cursor and "2 leads" in first.text
    second = await console.client.post(
        f"{UI}/leads", data={"csrf": csrf, "cursor": cursor.group(1)}
    )
    ids = re.findall(r'<tr data-lead="([^"]+)"', first.text + second.text)
    assert sorted(ids) == ["led_dead", "led_ok"]
    assert 'name="cursor"' not in second.text


async def test_actions_are_audited_with_the_token_name(console: AppHarness) -> None:
    from bridge.operations.audit import list_audit

    await seed(console)
    csrf = await login(console.client)
    await console.client.post(
        f"{UI}/leads/led_dead/replay", data={"csrf": csrf, "destination": "crm"}
    )
    (entry,) = await list_audit(console.store)
    assert (entry.actor, entry.action, entry.target) == (
        "console:admin.tokens[0]",
        "replay",
        "led_dead",
    )
    assert entry.detail["requeued"] == 1


async def test_erase_previews_counts_then_erases(console: AppHarness) -> None:
    from bridge.operations.audit import list_audit

    await seed(console)
    csrf = await login(console.client)
    preview = await console.client.post(
        f"{UI}/erase/preview", data={"csrf": csrf, "email": "led_dead@example.com"}
    )
    assert preview.status_code == 200
    assert re.search(r"<th scope=\"row\">leads</th><td>1</td>", preview.text)
    assert await console.store.get_lead("led_dead") is not None  # a preview changes nothing

    done = await console.client.post(
        f"{UI}/erase/confirm", data={"csrf": csrf, "email": "led_dead@example.com"}
    )
    assert done.status_code == 200 and 'id="erase-done"' in done.text
    assert "led_dead@example.com" not in done.text  # counts, not values
    assert await console.store.get_lead("led_dead") is None
    entry = (await list_audit(console.store, action="erase"))[0]
    assert (entry.actor, entry.target, entry.detail["leads"]) == (
        "console:admin.tokens[0]",
        "by email",
        1,
    )
    assert "example.com" not in json.dumps(entry.detail)


async def test_viewer_cannot_erase(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client, VIEWER)
    response = await console.client.post(
        f"{UI}/erase/confirm", data={"csrf": csrf, "lead_id": "led_dead"}
    )
    assert response.status_code == 403
    assert await console.store.get_lead("led_dead") is not None


async def test_replay_selected_dead_letters_by_id(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client)
    page = await console.client.get(f"{UI}/dead-letters", params={"error_class": "http_5xx"})
    ids = re.findall(r'name="selected" value="(\d+)"', page.text)
    assert len(ids) == 1 and "http_5xx" in page.text
    preview = await console.client.post(
        f"{UI}/dead-letters/replay", data={"csrf": csrf, "scope": "selected", "selected": ids}
    )
    assert "<b>1</b> dead delivery will be requeued" in preview.text
    as_of = re.search(r'name="as_of" value="([^"]+)"', preview.text)
    assert as_of
    done = await console.client.post(
        f"{UI}/dead-letters/replay",
        data={"csrf": csrf, "selected": ids, "as_of": as_of.group(1), "confirm": "1"},
    )
    assert done.status_code == 303
    assert await status_of(console, "led_dead", "crm") == "pending"


async def test_send_a_test_lead_shows_the_answer(console: AppHarness) -> None:
    from bridge.operations.audit import list_audit

    csrf = await login(console.client)
    response = await console.client.post(f"{UI}/destinations/archive/test", data={"csrf": csrf})
    assert response.status_code == 200
    assert re.search(r"Test lead, archive:</b> OK", response.text)
    assert "test lead lb-test-" in response.text
    (entry,) = await list_audit(console.store, action="test_send")
    assert entry.actor == "console:admin.tokens[0]"


async def test_overview_shows_counts_chart_and_unrouted_leads(
    make_app: Callable[..., Any], tmp_path: Any
) -> None:
    h: AppHarness = await make_app(
        admin={"tokens": [ADMIN]},
        destinations=[
            {
                "name": "us-only",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "o.jsonl")},
                "when": {"field": "data.organization_country", "equals": "Canada"},
            }
        ],
    )
    await seed_delivered_now(h)
    await login(h.client)
    html = (await h.client.get(f"{UI}/")).text
    assert '<svg class="chart"' in html and "<title>" in html
    assert 'id="unrouted"' in html and "led_unrouted" in html

"""The Usage page at `/` in a real browser (Debian's headless Chromium driven by Playwright),
against the real server on the demo data: each section shows what the API answers for the
same arguments; balances and alerts change in place over the WebSocket, also after a server
restart; its controls (sort, pages, filters, live tail, export, allocation, acknowledgement,
application picker) do what the API does; an End User token sees only its End User; a
refused key, a revoked key and a lost network each show their state.

Screenshots go to test-artifacts/usage-page/ (or $USAGEGRAPH_TEST_ARTIFACTS)."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.demo import Demo, seed_demo
from api.routes.usage_page import USAGE_DIR
from tests.conftest import REQUIRE_SERVICES, Backend, Server
from tests.demo_server import demo_server
from tests.graphql_client import Caller

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get(
        "USAGEGRAPH_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)
WAIT_MS = 15_000  # a change pushed over the WebSocket, on a machine shared with other work
ASSET_BUDGET = 300 * 1024  # the page's own assets, gzip-compressed

POOLS = """query($id: ID!) { application(id: $id) { pools {
  key purchased allocated used remaining expired unallocated status } } }"""
SUMMARY = """query($id: ID!, $pool: String!) { application(id: $id) {
  allocationSummary(pool: $pool) { endUsersTotal withCredits low exhausted allocated used
    remaining unallocated } } }"""
END_USERS = """query($id: ID!, $pool: String!) { application(id: $id) {
  endUsers(first: 20, orderBy: {field: CREATED, direction: ASC, pool: $pool}) {
    edges { node { id externalId balance(pool: $pool) { allocated used remaining } } } } } }"""
END_USER = """query($id: ID!, $externalId: String!) { application(id: $id) {
  endUser(externalId: $externalId) { balance(pool: "ai") { allocated } } } }"""
CONSUMPTION = """query($id: ID!, $from: DateTime!, $to: DateTime!) { application(id: $id) {
  consumption(from: $from, to: $to, granularity: DAY) {
    totalUsed totalExpired buckets { start spike } } } }"""
ALERTS = """query($id: ID!) { application(id: $id) {
  alerts(first: 20) { edges { node { id acknowledged } } } } }"""
BILLING = """query($id: ID!) { application(id: $id) { billingPeriods(first: 1) {
  start pools { pool purchased used expired allocated closingRemaining } } } }"""
CONSUME = """mutation($input: ConsumeCreditsInput!) { consumeCredits(input: $input) {
  balance { used remaining } errors { code message } } }"""
THRESHOLD = """mutation($input: SetLowBalanceThresholdInput!) {
  setLowBalanceThreshold(input: $input) { errors { code message } } }"""
TOKEN = """mutation($input: IssueEndUserTokenInput!) {
  issueEndUserToken(input: $input) { token errors { code message } } }"""
MY_BALANCES = "{ viewer { endUser { externalId balances { pool allocated used remaining } } } }"


def test_page_assets_stay_under_the_budget() -> None:
    """Everything the page loads (its modules, styles and vendored libraries), compressed."""
    served = [path for path in USAGE_DIR.rglob("*") if path.suffix in {".html", ".js", ".css"}]
    assert any(path.name == "index.html" for path in served)
    compressed = sum(len(gzip.compress(path.read_bytes(), 9)) for path in served)
    assert compressed < ASSET_BUDGET, f"{compressed} bytes compressed"


async def test_root_serves_the_page_with_a_strict_policy(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(f"{server.url}/")
        module = await client.get(f"{server.url}/static/usage/app.js")
        vendored = await client.get(f"{server.url}/static/usage/vendor/uplot/uPlot.iife.min.js")
        missing = await client.get(f"{server.url}/static/usage/nothing.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/usage/app.js">' in page.text
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert vendored.status_code == 200
    assert missing.status_code == 404


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, never a downloaded one; missing, it fails under
    USAGEGRAPH_REQUIRE_SERVICES=1 and skips otherwise."""
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def _require_browser() -> None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing("Playwright's Python package is not installed")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")


def _missing(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class DemoSite:
    server: Server
    demo: Demo
    api: Caller

    @property
    def application_id(self) -> str:
        return str(self.demo.application_id)

    def page_url(self, credential: str) -> str:
        return f"{self.server.url}/#key={credential}"


@pytest.fixture(scope="session")
async def demo_site(server: Server, backend: Backend) -> AsyncIterator[DemoSite]:
    demo = await seed_demo()
    async with httpx.AsyncClient(timeout=30) as client:
        yield DemoSite(server, demo, Caller(client, server.graphql, demo.api_key))


async def _open(
    browser: Any, url: str, width: int = 1280, height: int = 800, **options: Any
) -> Any:
    context = await browser.new_context(viewport={"width": width, "height": height}, **options)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors too: a Content-Security-Policy violation, a failed load.
    page.on("console", lambda line: errors.append(line.text) if line.type == "error" else None)
    page.errors = errors
    await page.goto(url)
    return page


async def _values(page: Any, row: str, fields: list[str]) -> dict[str, int]:
    cells = {}
    for field in fields:
        cell = page.locator(f'{row} [data-field="{field}"]')
        cells[field] = int(await cell.get_attribute("data-value"))
    return cells


async def test_each_section_shows_what_the_api_answers(
    browser: Any, demo_site: DemoSite, backend: Backend
) -> None:
    started = time.monotonic()
    page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
    await page.locator("#pools tbody tr[data-pool]").first.wait_for(timeout=WAIT_MS)
    shown_in = time.monotonic() - started
    print(f"pools shown {shown_in:.2f} s after navigation ({backend.name})")
    assert shown_in < 5, f"the pools took {shown_in:.2f} s"
    # The handed-over key left the address bar at once and lives in the tab's session only.
    assert "#" not in page.url and demo_site.demo.api_key not in page.url
    stored = await page.evaluate("sessionStorage.getItem('usagegraph.credential')")
    assert stored == demo_site.demo.api_key
    assert await page.evaluate("localStorage.length") == 0

    api_id = demo_site.application_id
    pools = (await demo_site.api(POOLS, id=api_id))["application"]["pools"]
    numeric = ["purchased", "allocated", "used", "remaining", "expired", "unallocated"]
    for pool in pools:
        row = f'#pools tr[data-pool="{pool["key"]}"]'
        assert await _values(page, row, numeric) == {field: pool[field] for field in numeric}
        assert await page.locator(f'{row} [data-field="status"]').inner_text() == pool["status"]

    first_pool = pools[0]["key"]
    summary = (await demo_site.api(SUMMARY, id=api_id, pool=first_pool))["application"][
        "allocationSummary"
    ]
    await page.locator('#allocation [data-field="endUsersTotal"]').wait_for()
    assert await _values(page, "#allocation", list(summary)) == summary

    edges = (await demo_site.api(END_USERS, id=api_id, pool=first_pool))["application"]["endUsers"][
        "edges"
    ]
    await page.locator("#end-users tbody tr[data-end-user]").first.wait_for()
    shown = await page.locator("#end-users tbody tr[data-end-user]").evaluate_all(
        "rows => rows.map(row => row.dataset.externalId)"
    )
    assert shown == [edge["node"]["externalId"] for edge in edges]
    first = edges[0]["node"]
    row = f'#end-users tr[data-end-user="{first["id"]}"]'
    assert await _values(page, row, ["allocated", "used", "remaining"]) == first["balance"]

    [period] = (await demo_site.api(BILLING, id=api_id))["application"]["billingPeriods"]
    for pool in period["pools"]:
        row = f'#billing [data-period="{period["start"]}"] tr[data-pool="{pool["pool"]}"]'
        fields = ["purchased", "used", "expired", "allocated", "closingRemaining"]
        assert await _values(page, row, fields) == {field: pool[field] for field in fields}

    # The consumption overview's defaults: every pool, daily, the last 30 days.
    now = datetime.now(UTC)
    series = (
        await demo_site.api(
            CONSUMPTION,
            id=api_id,
            **{"from": (now - timedelta(days=30)).isoformat(), "to": now.isoformat()},
        )
    )["application"]["consumption"]
    totals = await _values(page, "#consumption", ["totalUsed", "totalExpired"])
    assert totals == {"totalUsed": series["totalUsed"], "totalExpired": series["totalExpired"]}
    spikes = await page.locator("#consumption .spike").evaluate_all(
        "spans => spans.map(span => span.dataset.start)"
    )
    assert spikes == [bucket["start"] for bucket in series["buckets"] if bucket["spike"]]

    await _screenshots(page, browser, demo_site, f"admin-{backend.name}")
    assert await page.locator('[data-kind="error"]').all_inner_texts() == []
    assert page.errors == []
    await page.context.close()


async def _screenshots(page: Any, browser: Any, demo_site: DemoSite, name: str) -> None:
    folder = ARTIFACTS / "usage-page"
    folder.mkdir(parents=True, exist_ok=True)
    await page.wait_for_timeout(500)  # the charts draw after their data
    await page.screenshot(path=str(folder / f"{name}-1280x800.png"))
    phone = await _open(browser, demo_site.page_url(demo_site.demo.api_key), 390, 844)
    await phone.locator("#pools tbody tr[data-pool]").first.wait_for(timeout=WAIT_MS)
    await phone.wait_for_timeout(500)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    await phone.screenshot(path=str(folder / f"{name}-390x844.png"))
    await phone.context.close()


ROOMY = """query($id: ID!) { application(id: $id) {
  endUsers(first: 5, filter: {pool: "ai", status: [OK]},
           orderBy: {field: REMAINING, direction: DESC, pool: "ai"}) {
    edges { node { id externalId name balance(pool: "ai") { remaining } } } } } }"""


async def _roomy_end_users(api: Caller, application_id: str) -> list[dict[str, Any]]:
    """End Users holding the most AI credits (whatever the demo's history), most first."""
    edges = (await api(ROOMY, id=application_id))["application"]["endUsers"]["edges"]
    assert len(edges) >= 3 and edges[2]["node"]["balance"]["remaining"] >= 20, edges
    return [edge["node"] for edge in edges]


async def _find_end_user(page: Any, external_id: str) -> Any:
    """The End User's row, found with the page's search."""
    form = page.locator("#end-users form")
    await form.get_by_label("Find by external id").fill(external_id)
    await form.get_by_role("button", name="Find").click()
    row = page.locator(f'#end-users tbody tr[data-external-id="{external_id}"]')
    await row.wait_for(timeout=WAIT_MS)
    return row


async def test_consumption_shows_up_live_with_its_alert(
    browser: Any, demo_site: DemoSite, backend: Backend
) -> None:
    from playwright.async_api import expect

    page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
    await expect(page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
    await page.locator("#end-users tbody tr[data-end-user]").first.wait_for(timeout=WAIT_MS)
    [roomy, *_] = await _roomy_end_users(demo_site.api, demo_site.application_id)
    external_id = roomy["externalId"]
    end_user = await _find_end_user(page, external_id)
    pool_used = page.locator('#pools tr[data-pool="ai"] [data-field="used"]')
    used_before = int(await pool_used.get_attribute("data-value"))
    remaining_before = int(
        await end_user.locator('[data-field="remaining"]').get_attribute("data-value")
    )
    api_id = demo_site.application_id
    ref = {"externalId": external_id}
    threshold = await demo_site.api(
        THRESHOLD,
        input={"applicationId": api_id, "pool": "ai", "endUser": ref, "threshold": 5},
    )
    assert threshold["setLowBalanceThreshold"]["errors"] == []
    # Down to 3 credits: below its threshold of 5, a LOW alert.
    credits = remaining_before - 3
    consumed = await demo_site.api(
        CONSUME,
        input={
            "applicationId": api_id,
            "endUser": ref,
            "pool": "ai",
            "credits": credits,
            "feature": "ai_generation",
            "idempotencyKey": uuid.uuid4().hex,
        },
    )
    assert consumed["consumeCredits"]["errors"] == []
    await expect(pool_used).to_have_attribute(
        "data-value", str(used_before + credits), timeout=WAIT_MS
    )
    await expect(end_user.locator('[data-field="remaining"]')).to_have_attribute(
        "data-value", "3", timeout=WAIT_MS
    )
    await expect(end_user.locator('[data-field="status"]')).to_have_text("LOW")
    alert = page.locator("#alerts li[data-kind='LOW']", has_text=external_id)
    await expect(alert.first).to_be_visible(timeout=WAIT_MS)
    alert_id = await alert.first.get_attribute("data-alert")
    await alert.first.get_by_role("button", name="Acknowledge").click()
    acknowledged = page.locator(f'#alerts li[data-alert="{alert_id}"]')
    await expect(acknowledged).to_contain_text("acknowledged", timeout=WAIT_MS)
    listed = (await demo_site.api(ALERTS, id=api_id))["application"]["alerts"]["edges"]
    assert {"id": alert_id, "acknowledged": True} in [edge["node"] for edge in listed]
    assert await page.locator('[data-kind="error"]').all_inner_texts() == []
    assert page.errors == []
    await page.context.close()


async def test_an_end_user_token_sees_only_its_end_user(
    browser: Any, demo_site: DemoSite, backend: Backend
) -> None:
    from playwright.async_api import expect

    _, me, other, *_ = await _roomy_end_users(demo_site.api, demo_site.application_id)
    issued = await demo_site.api(
        TOKEN,
        input={
            "applicationId": demo_site.application_id,
            "endUser": {"externalId": me["externalId"]},
        },
    )
    token = issued["issueEndUserToken"]["token"]
    async with httpx.AsyncClient(timeout=30) as client:
        mine = (await Caller(client, demo_site.server.graphql, token)(MY_BALANCES))["viewer"]
    page = await _open(browser, demo_site.page_url(token))
    rows = page.locator("#my-balances tbody tr[data-pool]")
    await rows.first.wait_for(timeout=WAIT_MS)
    assert await page.locator("#dashboard").is_hidden()
    assert await page.locator("#widget").is_visible()
    balances = mine["endUser"]["balances"]
    assert await rows.count() == len(balances)
    for balance in balances:
        row = f'#my-balances tr[data-pool="{balance["pool"]}"]'
        expected = {field: balance[field] for field in ("allocated", "used", "remaining")}
        assert await _values(page, row, list(expected)) == expected
    text = await page.locator("body").inner_text()
    assert other["externalId"] not in text
    await expect(page.locator("#who")).to_contain_text(me["name"] or me["externalId"])
    # Its own balance changes in place too.
    await expect(page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
    [ai] = [balance for balance in balances if balance["pool"] == "ai"]
    consumed = await demo_site.api(
        CONSUME,
        input={
            "applicationId": demo_site.application_id,
            "endUser": {"externalId": me["externalId"]},
            "pool": "ai",
            "credits": 1,
            "feature": "ai_rewrite",
        },
    )
    assert consumed["consumeCredits"]["errors"] == []
    await expect(
        page.locator('#my-balances tr[data-pool="ai"] [data-field="remaining"]')
    ).to_have_attribute("data-value", str(ai["remaining"] - 1), timeout=WAIT_MS)
    await _screenshot_only(page, f"end-user-{backend.name}")
    assert page.errors == []
    await page.context.close()


async def _screenshot_only(page: Any, name: str) -> None:
    folder = ARTIFACTS / "usage-page"
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(folder / f"{name}-1280x800.png"))


async def test_the_export_control_downloads_what_the_api_exports(
    browser: Any, demo_site: DemoSite
) -> None:
    page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
    form = page.locator("#export form")
    await form.locator('select[name="type"]').select_option("CONSUMPTION")
    first_day = (datetime.now(UTC) - timedelta(days=20)).date()
    last_day = datetime.now(UTC).date()
    await form.locator('input[name="from"]').fill(first_day.isoformat())
    await form.locator('input[name="to"]').fill(last_day.isoformat())
    async with page.expect_download(timeout=WAIT_MS) as waiting:
        await form.get_by_role("button", name="Download").click()
    download = await waiting.value
    downloaded = _read(await download.path())
    async with httpx.AsyncClient(timeout=30) as client:
        exported = await client.get(
            f"{demo_site.server.url}/v1/applications/{demo_site.application_id}/export",
            params={
                "type": "consumption",
                "from": _midnight(first_day),
                "to": _midnight(last_day + timedelta(days=1)),
                "format": "csv",
            },
            headers={"Authorization": f"Bearer {demo_site.demo.api_key}"},
        )
    assert exported.status_code == 200, exported.text
    assert downloaded == exported.content
    assert downloaded.count(b"\n") > 10  # weeks of demo consumption, not an empty file
    await page.context.close()


def _read(path: Path) -> bytes:
    return Path(path).read_bytes()


def _midnight(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


async def test_an_admin_key_allocates_and_releases_from_the_table(
    browser: Any, demo_site: DemoSite
) -> None:
    from playwright.async_api import expect

    page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
    row = page.locator("#end-users tbody tr[data-end-user]").nth(2)
    await row.wait_for(timeout=WAIT_MS)
    external_id = await row.get_attribute("data-external-id")
    allocated = page.locator(
        f'#end-users tr[data-external-id="{external_id}"] [data-field="allocated"]'
    )
    before = int(await allocated.get_attribute("data-value"))
    await row.get_by_role("spinbutton").fill("25")
    await row.get_by_role("button", name="Allocate").click()
    await expect(allocated).to_have_attribute("data-value", str(before + 25), timeout=WAIT_MS)
    await row.get_by_role("spinbutton").fill("10")
    await row.get_by_role("button", name="Release").click()
    await expect(allocated).to_have_attribute("data-value", str(before + 15), timeout=WAIT_MS)
    found = await demo_site.api(
        END_USER,
        id=demo_site.application_id,
        externalId=external_id,
    )
    assert found["application"]["endUser"]["balance"]["allocated"] == before + 15
    # More than the pool holds: the API's error, shown on the row, and nothing changes.
    await row.get_by_role("spinbutton").fill("900000000")
    await row.get_by_role("button", name="Allocate").click()
    await expect(row.locator(".adjust-message")).to_contain_text("credits", timeout=WAIT_MS)
    await expect(allocated).to_have_attribute("data-value", str(before + 15))
    assert page.errors == []
    await page.context.close()


async def test_the_pools_show_within_a_second(browser: Any, demo_site: DemoSite) -> None:
    """From navigation to the pools on screen, as the page's own clock measures it (after
    a first load, so that the server's first-request work is not counted)."""
    shown = []
    for _ in range(2):
        page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
        await page.locator("#pools tbody tr[data-pool]").first.wait_for(timeout=WAIT_MS)
        shown.append(
            await page.evaluate("performance.getEntriesByName('pools-shown')[0].startTime")
        )
        await page.context.close()
    print(f"pools shown after {shown[0]:.0f} ms (first load), {shown[1]:.0f} ms (second)")
    assert shown[1] < 1000, shown


READ_KEY = """mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id } secret errors { code message } } }"""
REVOKE = """mutation($id: ID!) { revokeApiKey(id: $id) { errors { code message } } }"""


async def test_a_key_revoked_while_the_page_is_open_signs_out(
    browser: Any, demo_site: DemoSite
) -> None:
    from playwright.async_api import expect

    created = (
        await demo_site.api(
            READ_KEY,
            input={"applicationId": demo_site.application_id, "name": "page", "role": "READ"},
        )
    )["createApiKey"]
    page = await _open(browser, demo_site.page_url(created["secret"]))
    await page.locator("#end-users tbody tr[data-end-user]").first.wait_for(timeout=WAIT_MS)
    assert await page.locator("#end-users td.adjust").count() == 0  # READ: no allocation
    assert await page.locator("#end-users th[data-admin]").is_hidden()
    revoked = await demo_site.api(REVOKE, id=created["apiKey"]["id"])
    assert revoked["revokeApiKey"]["errors"] == []
    await page.locator('#consumption select[name="range"]').select_option("7")
    await expect(page.locator("#signin-error")).to_contain_text("revoked", timeout=WAIT_MS)
    assert await page.locator("#dashboard").is_hidden()
    assert await page.evaluate("sessionStorage.getItem('usagegraph.credential')") is None
    await page.context.close()


async def test_a_network_failure_shows_in_the_section_and_recovers(
    browser: Any, demo_site: DemoSite
) -> None:
    from playwright.async_api import expect

    page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
    state = page.locator('#consumption [data-role="state"]')
    await page.locator('#consumption [data-field="totalUsed"]').wait_for(timeout=WAIT_MS)
    await page.context.set_offline(True)
    await page.locator('#consumption select[name="range"]').select_option("7")
    await expect(state).to_contain_text("Network down", timeout=WAIT_MS)
    await expect(page.locator("#notice")).to_contain_text("offline")
    await page.context.set_offline(False)
    await page.locator('#consumption select[name="range"]').select_option("30")
    await expect(state).to_be_empty(timeout=WAIT_MS)
    await expect(page.locator('#consumption [data-field="totalUsed"]')).to_be_visible()
    await page.context.close()


REQUESTS = """query($id: ID!, $prefix: String!) { application(id: $id) {
  requestLog(first: 25, filter: {apiKeyPrefix: $prefix}) { edges { node { id endpoint } } } } }"""


async def test_the_request_log_filters_and_tails(browser: Any, demo_site: DemoSite) -> None:
    from playwright.async_api import expect

    created = (
        await demo_site.api(
            READ_KEY,
            input={"applicationId": demo_site.application_id, "name": "log", "role": "READ"},
        )
    )["createApiKey"]
    key_id = created["secret"].split("_")[1]
    async with httpx.AsyncClient(timeout=30) as client:
        reader = Caller(client, demo_site.server.graphql, created["secret"])
        await reader("{ viewer { role } }")
        await reader("{ applications { id } }")

        async def logged() -> list[dict[str, str]]:
            data = await demo_site.api(REQUESTS, id=demo_site.application_id, prefix=key_id)
            return [edge["node"] for edge in data["application"]["requestLog"]["edges"]]

        entries = await logged()
        deadline = time.monotonic() + 10
        while len(entries) < 2 and time.monotonic() < deadline:  # the log is written in batches
            await asyncio.sleep(0.2)
            entries = await logged()
        assert len(entries) == 2

        page = await _open(browser, demo_site.page_url(demo_site.demo.api_key))
        await page.locator("#requests tbody tr").first.wait_for(timeout=WAIT_MS)
        form = page.locator("#requests form")
        await form.get_by_label("API key").fill(key_id)
        await form.get_by_label("Live tail").check()
        await form.get_by_role("button", name="Apply").click()
        rows = page.locator("#requests tbody tr[data-request]")
        await expect(rows).to_have_count(2, timeout=WAIT_MS)
        shown = await rows.evaluate_all("rows => rows.map(row => row.dataset.request)")
        assert shown == [entry["id"] for entry in entries]
        assert await rows.nth(0).locator(".endpoint").inner_text() == entries[0]["endpoint"]

        # The tail's subscription starts a moment after the click: ask until one arrives.
        for _ in range(10):
            await reader("{ viewer { role } }")
            await page.wait_for_timeout(1000)
            if await rows.count() > 2:
                break
        assert await rows.count() > 2
        assert await rows.nth(0).locator(".endpoint").inner_text() == "POST /graphql viewer"
    await page.context.close()


SORTED = """query($id: ID!, $after: String, $filter: EndUserFilter) { application(id: $id) {
  endUsers(first: 20, after: $after, filter: $filter,
           orderBy: {field: USED, direction: DESC, pool: "ai"}) {
    totalCount pageInfo { endCursor } edges { node { externalId } } } } }"""


async def _shown_end_users(page: Any) -> list[str]:
    return await page.locator("#end-users tbody tr[data-end-user]").evaluate_all(
        "rows => rows.map(row => row.dataset.externalId)"
    )


async def test_end_users_sort_page_and_filter_from_the_keyboard(
    browser: Any, demo_site: DemoSite
) -> None:
    """Sorted by Used (Enter on its header), the next page, then only LOW End Users: each
    time the rows the API gives for the same arguments. In the viewer's locale and zone."""
    from playwright.async_api import expect

    page = await _open(
        browser,
        demo_site.page_url(demo_site.demo.api_key),
        locale="en-US",
        timezone_id="Asia/Tokyo",
    )
    await page.locator("#end-users tbody tr[data-end-user]").first.wait_for(timeout=WAIT_MS)
    api_id = demo_site.application_id

    async def api_page(after: str | None = None, status: str | None = None) -> dict[str, Any]:
        status_filter = {"pool": "ai", "status": [status]} if status else None
        data = await demo_site.api(SORTED, id=api_id, after=after, filter=status_filter)
        return data["application"]["endUsers"]

    header = page.locator('#end-users th[data-sort="USED"]')
    await header.get_by_role("button").focus()
    await page.keyboard.press("Enter")
    await expect(header).to_have_attribute("aria-sort", "descending", timeout=WAIT_MS)
    first = await api_page()
    names = [edge["node"]["externalId"] for edge in first["edges"]]
    await expect(page.locator("#end-users tbody tr[data-end-user]").first).to_have_attribute(
        "data-external-id", names[0], timeout=WAIT_MS
    )
    assert await _shown_end_users(page) == names

    await page.locator("#end-users").get_by_role("button", name="Next").press("Enter")
    second = await api_page(after=first["pageInfo"]["endCursor"])
    names = [edge["node"]["externalId"] for edge in second["edges"]]
    await expect(page.locator("#end-users tbody tr[data-end-user]").first).to_have_attribute(
        "data-external-id", names[0], timeout=WAIT_MS
    )
    assert await _shown_end_users(page) == names
    pages = -(-first["totalCount"] // 20)
    await expect(page.locator('#end-users [data-role="page"]')).to_have_text(
        f"Page 2 of {pages} · {first['totalCount']} End Users"
    )

    await page.locator("#end-users").get_by_label("Status").select_option("LOW")
    low = await api_page(status="LOW")
    names = [edge["node"]["externalId"] for edge in low["edges"]]
    if names:
        await expect(page.locator("#end-users tbody tr[data-end-user]").first).to_have_attribute(
            "data-external-id", names[0], timeout=WAIT_MS
        )
    else:
        await expect(page.locator('#end-users [data-role="state"]')).to_have_text(
            "No End User matches.", timeout=WAIT_MS
        )
    assert await _shown_end_users(page) == names

    # Thousands separators of the locale; times in the zone, UTC on hover.
    purchased = page.locator('#pools tr[data-pool="ai"] [data-field="purchased"]')
    value = int(await purchased.get_attribute("data-value"))
    assert await purchased.inner_text() == f"{value:,}"
    request_time = page.locator("#requests tbody time").first
    instant = datetime.fromisoformat(await request_time.get_attribute("datetime"))
    tokyo = instant.astimezone(timezone(timedelta(hours=9)))
    shown = (await request_time.inner_text()).replace("\u202f", " ")
    assert shown == f"{tokyo:%b} {tokyo.day}, {tokyo.year}, {tokyo:%-I:%M %p}", shown
    utc = (await request_time.get_attribute("title")).replace("\u202f", " ")
    assert utc == f"{instant.day} {instant:%b %Y}, {instant:%H:%M:%S} UTC", utc
    assert page.errors == []
    await page.context.close()


BUY = """mutation($input: PurchaseCreditsInput!) {
  purchaseCredits(input: $input) { errors { code message } } }"""


async def test_an_organization_key_switches_between_its_applications(
    browser: Any, demo_site: DemoSite
) -> None:
    """The picker lists the organization's applications; choosing one shows its pools and
    its live changes (the other's subscriptions are gone)."""
    from playwright.async_api import expect

    from models.accounts import create_application, create_organization

    organization, issued = await create_organization(f"page {uuid.uuid4().hex[:6]}")
    async with httpx.AsyncClient(timeout=30) as client:
        api = Caller(client, demo_site.server.graphql, issued.secret)
        ids = []
        for name, credits in (("Studio", 1_000), ("Preview", 2_500)):  # pools come with it
            application = await create_application(organization.id, name)
            ids.append(str(application.id))
            bought = await api(BUY, input={**pool_ref(application.id), "credits": credits})
            assert bought["purchaseCredits"]["errors"] == []
        page = await _open(browser, demo_site.page_url(issued.secret))
        purchased = page.locator('#pools tr[data-pool="ai"] [data-field="purchased"]')
        await expect(purchased).to_have_attribute("data-value", "1000", timeout=WAIT_MS)
        picker = page.get_by_label("Application", exact=True)
        assert await picker.is_enabled()
        await picker.select_option(label="Preview")
        await expect(purchased).to_have_attribute("data-value", "2500", timeout=WAIT_MS)
        await expect(page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
        # A purchase in the chosen application shows; one in the other does not.
        await api(BUY, input={**pool_ref(ids[1]), "credits": 5})
        remaining = page.locator('#pools tr[data-pool="ai"] [data-field="remaining"]')
        await expect(remaining).to_have_attribute("data-value", "2505", timeout=WAIT_MS)
        # Every value the cell takes from now on (a refresh would hide a passing wrong one).
        await page.evaluate(
            """() => {
              window.seen = [];
              const body = document.querySelector("#pools tbody");
              new MutationObserver(() => window.seen.push(body.querySelector(
                'tr[data-pool="ai"] [data-field="remaining"]')?.dataset.value))
                .observe(body, { subtree: true, childList: true, attributes: true });
            }"""
        )
        for credits in (7_000, 1):  # past the shown version
            await api(BUY, input={**pool_ref(ids[0]), "credits": credits})
        await page.wait_for_timeout(2500)
        assert set(await page.evaluate("window.seen")) <= {"2505"}
    assert page.errors == []
    await page.context.close()


def pool_ref(application_id: object) -> dict[str, str]:
    return {"applicationId": str(application_id), "pool": "ai"}


async def test_a_refused_key_returns_to_sign_in_with_a_reason(
    browser: Any, demo_site: DemoSite
) -> None:
    from playwright.async_api import expect

    page = await _open(browser, demo_site.page_url("ug_000000000000_not-a-real-secret"))
    await expect(page.locator("#signin-error")).to_contain_text("refused", timeout=WAIT_MS)
    assert await page.locator("#signin").is_visible()
    assert await page.locator("#dashboard").is_hidden()
    assert await page.evaluate("sessionStorage.getItem('usagegraph.credential')") is None
    await page.context.close()


async def test_the_page_recovers_when_the_server_restarts(browser: Any, tmp_path: Path) -> None:
    """The WebSocket drops with the server process; the page reconnects, resubscribes and
    shows the next change without a reload."""
    from playwright.async_api import expect

    with demo_server(tmp_path) as first:
        # A key of its own: a restarted `serve --demo` may replace the demo key it printed.
        async with httpx.AsyncClient(timeout=30) as client:
            api = Caller(client, f"{first.url}/graphql", first.key)
            viewer = await api("{ viewer { application { id } } }")
            created = await api(
                READ_KEY,
                input={
                    "applicationId": viewer["viewer"]["application"]["id"],
                    "name": "usage page",
                    "role": "READ",
                },
            )
        # The link serve --demo printed signs in; then sign out and paste the page's own key.
        page = await _open(browser, first.page_link)
        await expect(page.locator("#who")).to_contain_text("ADMIN", timeout=WAIT_MS)
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_label("API key or End User token").fill(created["createApiKey"]["secret"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text("READ", timeout=WAIT_MS)
        live = page.locator("#live")
        await expect(live).to_have_text("Live", timeout=WAIT_MS)
    await expect(live).to_have_text("Live: reconnecting…", timeout=WAIT_MS)
    with demo_server(tmp_path, port=first.port) as second:
        await expect(live).to_have_text("Live", timeout=30_000)
        await page.wait_for_load_state("networkidle")
        async with httpx.AsyncClient(timeout=30) as client:
            api = Caller(client, f"{second.url}/graphql", second.key)
            application_id = (await api("{ viewer { application { id } } }"))["viewer"][
                "application"
            ]["id"]
            [roomy, *_] = await _roomy_end_users(api, application_id)
            end_user = await _find_end_user(page, roomy["externalId"])
            remaining = int(
                await end_user.locator('[data-field="remaining"]').get_attribute("data-value")
            )
            consumed = await api(
                CONSUME,
                input={
                    "applicationId": application_id,
                    "endUser": {"externalId": roomy["externalId"]},
                    "pool": "ai",
                    "credits": 2,
                    "feature": "ai_generation",
                },
            )
        assert consumed["consumeCredits"]["errors"] == []
        await expect(end_user.locator('[data-field="remaining"]')).to_have_attribute(
            "data-value", str(remaining - 2), timeout=WAIT_MS
        )
        # The reconnection attempts while the server was down, and nothing else.
        unexpected = [error for error in page.errors if "ERR_CONNECTION_REFUSED" not in error]
        assert unexpected == []
        await page.context.close()

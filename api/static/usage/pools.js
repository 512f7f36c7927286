// Application credit pools: the counters of each pool and its packs, kept current by
// balanceChanged events (a pool event has no endUserId).

import { coalesce, formatInteger, h, labelCells, numberCell, setNumber, setState, statusBadge, timeElement } from "./dom.js";

const POOLS = `query UsagePools($id: ID!) {
  application(id: $id) {
    pools {
      key name purchased allocated used remaining expired unallocated status version
      lowBalanceThreshold
      packs(first: 20) { id credits used expired remaining purchasedAt expiresAt package reference }
    }
  }
}`;

const LIVE_FIELDS = ["allocated", "used", "remaining", "expired"];
const SOON_MS = 7 * 86_400_000;

export function poolsSection(ctx) {
  const section = document.getElementById("pools");
  const body = section.querySelector("tbody");
  const versions = new Map();

  async function load() {
    if (!versions.size) setState(section, "loading");
    try {
      const data = await ctx.request(POOLS, { id: ctx.applicationId });
      const pools = data.application?.pools ?? [];
      render(pools);
      setState(section, pools.length ? null : "empty", "This application has no credit pools yet.");
      if (!performance.getEntriesByName("pools-shown").length) performance.mark("pools-shown");
      return pools;
    } catch (error) {
      setState(section, "error", `Could not load the credit pools: ${error.message}`);
      return [];
    }
  }

  function render(pools) {
    body.replaceChildren();
    versions.clear();
    for (const pool of pools) {
      versions.set(pool.key, pool.version);
      body.append(
        h(
          "tr",
          { "data-pool": pool.key, "data-version": pool.version },
          h("th", { scope: "row" }, pool.name, h("span", { class: "key" }, pool.key)),
          numberCell(pool.purchased, "purchased"),
          ...LIVE_FIELDS.map((field) => numberCell(pool[field], field)),
          numberCell(pool.unallocated, "unallocated"),
          h("td", { "data-field": "status" }, statusBadge(pool.status)),
        ),
        h("tr", { class: "packs", "data-packs-of": pool.key }, h("td", { colspan: 8 }, packList(pool))),
      );
    }
    labelCells(section.querySelector("table"));
  }

  function packList(pool) {
    if (!pool.packs.length) return h("span", { class: "muted" }, "No packs.");
    const now = Date.now();
    return h(
      "details",
      {},
      h("summary", {}, `${pool.packs.length} pack${pool.packs.length === 1 ? "" : "s"}`),
      h(
        "ul",
        { class: "pack-list" },
        pool.packs.map((pack) => {
          const expires = pack.expiresAt ? Date.parse(pack.expiresAt) : null;
          const soon = expires !== null && expires - now < SOON_MS;
          return h(
            "li",
            { class: soon ? "soon" : null },
            h("strong", {}, pack.package ?? "No package"),
            ` · ${formatInteger(pack.remaining)} of ${formatInteger(pack.credits)} left`,
            ` · used ${formatInteger(pack.used)}, expired ${formatInteger(pack.expired)} · bought `,
            timeElement(pack.purchasedAt, { dateOnly: true }),
            " · ",
            expires === null ? "never expires" : h("span", {}, "expires ", timeElement(pack.expiresAt)),
          );
        }),
      ),
    );
  }

  // Unallocated and the packs are not in the event: fetch them again after a burst of events.
  const refresh = coalesce(load, 1500);

  function applyEvent(event) {
    const row = body.querySelector(`tr[data-pool="${CSS.escape(event.pool)}"]`);
    if (!row || event.version <= (versions.get(event.pool) ?? -1)) return;
    versions.set(event.pool, event.version);
    row.dataset.version = event.version;
    for (const field of LIVE_FIELDS) {
      setNumber(row.querySelector(`[data-field="${field}"]`), event[field]);
    }
    row.querySelector('[data-field="status"]').replaceChildren(statusBadge(event.status));
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("flash");
    refresh();
  }

  return { load, applyEvent };
}

// Billing records: each UTC month's figures per pool, with per-package usage.

import { formatInteger, formatUtcMonth, h, numberCell, setState, timeElement } from "./dom.js";

const PERIODS = `query UsageBilling($id: ID!) {
  application(id: $id) {
    billingPeriods(first: 6) {
      start end status closedAt endUserUsage activeEndUsers
      pools {
        pool name openingRemaining purchased used expired allocated closingRemaining endUserUsage
        packages { package purchased used expired remaining }
      }
    }
  }
}`;

const COLUMNS = [
  ["openingRemaining", "Opening"],
  ["purchased", "Purchased"],
  ["used", "Used"],
  ["expired", "Expired"],
  ["allocated", "Allocated"],
  ["closingRemaining", "Closing"],
  ["endUserUsage", "End User usage"],
];

export function billingSection(ctx) {
  const section = document.getElementById("billing");
  const list = section.querySelector('[data-role="periods"]');

  async function load() {
    if (!list.childElementCount) setState(section, "loading");
    try {
      const data = await ctx.request(PERIODS, { id: ctx.applicationId });
      const periods = data.application.billingPeriods;
      list.replaceChildren(...periods.map(period));
      setState(section, periods.length ? null : "empty", "No billing period yet.");
    } catch (error) {
      setState(section, "error", `Could not load the billing records: ${error.message}`);
    }
  }

  return { load };
}

function period(record) {
  return h(
    "article",
    { class: "period", "data-period": record.start },
    h(
      "h3",
      {},
      formatUtcMonth(record.start),
      " ",
      h("span", { class: `badge badge-${record.status.toLowerCase()}` }, record.status),
    ),
    h(
      "p",
      { class: "muted" },
      `End User usage ${formatInteger(record.endUserUsage)} · ${formatInteger(record.activeEndUsers)} active End Users`,
      record.closedAt ? h("span", {}, " · closed ", timeElement(record.closedAt)) : "",
    ),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "data" },
        h("caption", { class: "sr-only" }, `Billing record of ${formatUtcMonth(record.start)}`),
        h(
          "thead",
          {},
          h("tr", {}, h("th", { scope: "col" }, "Pool / package"), ...COLUMNS.map(([, label]) => h("th", { scope: "col", class: "num" }, label))),
        ),
        h(
          "tbody",
          {},
          record.pools.flatMap((pool) => [
            h(
              "tr",
              { "data-pool": pool.pool },
              h("th", { scope: "row" }, pool.name),
              ...COLUMNS.map(([field]) => numberCell(pool[field], field)),
            ),
            ...pool.packages.map((pack) =>
              h(
                "tr",
                { class: "package" },
                h("th", { scope: "row" }, `↳ ${pack.package ?? "No package"}`),
                h("td", { class: "num muted" }, ""),
                numberCell(pack.purchased, "purchased"),
                numberCell(pack.used, "used"),
                numberCell(pack.expired, "expired"),
                h("td", { class: "num muted" }, ""),
                numberCell(pack.remaining, "remaining"),
                h("td", { class: "num muted" }, ""),
              ),
            ),
          ]),
        ),
      ),
    ),
  );
}

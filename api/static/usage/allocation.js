// End User allocation summary of one pool: who has credits, who is close to running out,
// who consumes the most, and whether more allocation is needed.

import { coalesce, formatDecimal, formatInteger, h, setState, timeElement } from "./dom.js";

const SUMMARY = `query UsageAllocation($id: ID!, $pool: String!) {
  application(id: $id) {
    allocationSummary(pool: $pool) {
      endUsersTotal withAllocation withCredits low exhausted allocated used remaining unallocated
      burnRatePerDay projectedShortfall needsAllocation
      topConsumers(first: 5) { used remaining endUser { id externalId name } }
      closeToRunningOut(first: 5) { remaining burnRatePerDay projectedExhaustionAt endUser { id externalId name } }
    }
  }
}`;

const FIGURES = [
  ["endUsersTotal", "End Users"],
  ["withCredits", "With credits"],
  ["low", "Close to running out (low)"],
  ["exhausted", "Exhausted"],
  ["allocated", "Allocated"],
  ["used", "Used"],
  ["remaining", "Remaining with End Users"],
  ["unallocated", "Unallocated in the pool"],
];

export function allocationSection(ctx, { onPoolChange }) {
  const section = document.getElementById("allocation");
  const picker = section.querySelector('select[name="pool"]');
  const figures = section.querySelector('[data-role="figures"]');
  const top = section.querySelector('[data-role="top"]');
  const close = section.querySelector('[data-role="close"]');

  picker.addEventListener("change", () => {
    onPoolChange(picker.value);
    load();
  });

  function setPools(pools) {
    const previous = picker.value;
    picker.replaceChildren(...pools.map((pool) => h("option", { value: pool.key }, pool.name)));
    if (pools.some((pool) => pool.key === previous)) picker.value = previous;
    return picker.value;
  }

  async function load() {
    if (!picker.value) {
      setState(section, "empty", "No pool to summarise.");
      return;
    }
    if (!figures.childElementCount) setState(section, "loading");
    try {
      const data = await ctx.request(SUMMARY, { id: ctx.applicationId, pool: picker.value });
      render(data.application.allocationSummary);
      setState(section, null);
    } catch (error) {
      setState(section, "error", `Could not load the allocation summary: ${error.message}`);
    }
  }

  function render(summary) {
    // Each term with its value in a <div> (allowed in a <dl>): one grid cell per figure.
    figures.replaceChildren(
      ...FIGURES.map(([field, label]) =>
        h(
          "div",
          {},
          h("dt", {}, label),
          h("dd", { "data-field": field, "data-value": summary[field] }, formatInteger(summary[field])),
        ),
      ),
      h("div", {}, h("dt", {}, "Burn rate / day"), h("dd", { "data-field": "burnRatePerDay" }, formatDecimal(summary.burnRatePerDay))),
      h(
        "div",
        {},
        h("dt", {}, "Needs allocation"),
        h(
          "dd",
          { "data-field": "needsAllocation", class: summary.needsAllocation ? "warn" : null },
          summary.needsAllocation
            ? `Yes: ${formatInteger(summary.projectedShortfall)} short over 7 days`
            : "No",
        ),
      ),
    );
    top.replaceChildren(
      ...listOrEmpty(summary.topConsumers, (balance) =>
        h("li", {}, endUserName(balance.endUser), ` · used ${formatInteger(balance.used)}`),
      ),
    );
    close.replaceChildren(
      ...listOrEmpty(summary.closeToRunningOut, (balance) =>
        h(
          "li",
          {},
          endUserName(balance.endUser),
          ` · ${formatInteger(balance.remaining)} left, runs out `,
          timeElement(balance.projectedExhaustionAt),
        ),
      ),
    );
  }

  return { setPools, load, refresh: coalesce(load, 3000), pool: () => picker.value };
}

function listOrEmpty(items, render) {
  return items.length ? items.map(render) : [h("li", { class: "muted" }, "None.")];
}

export function endUserName(endUser) {
  if (!endUser) return "—";
  return endUser.name ? `${endUser.name} (${endUser.externalId})` : endUser.externalId;
}

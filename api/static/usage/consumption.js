// Consumption overview: credits used, expired and remaining over time, spikes marked.

import { drawChart } from "./chart.js";
import { coalesce, formatInteger, h, isoDaysAgo, setState, showState, timeElement } from "./dom.js";

const SERIES = `query UsageConsumption($id: ID!, $from: DateTime!, $to: DateTime!,
    $granularity: Granularity!, $pool: String, $feature: String) {
  application(id: $id) {
    consumption(from: $from, to: $to, granularity: $granularity, pool: $pool, feature: $feature) {
      totalUsed totalExpired
      buckets { start used expired remaining spike }
    }
  }
}`;

const HOURS = { HOUR: 1, DAY: 24, WEEK: 168, MONTH: 720 };
// Keeps a series well inside the query-cost budget (a series costs by its bucket count).
export const MAX_BUCKETS = 400;

export function consumptionSection(ctx) {
  const section = document.getElementById("consumption");
  const form = section.querySelector('[data-role="controls"]');
  const poolPicker = form.elements.pool;

  form.addEventListener("change", () => load());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });

  function setPools(pools) {
    const previous = poolPicker.value;
    poolPicker.replaceChildren(
      h("option", { value: "" }, "All pools"),
      ...pools.map((pool) => h("option", { value: pool.key }, pool.name)),
    );
    poolPicker.value = pools.some((pool) => pool.key === previous) ? previous : "";
  }

  /** `quiet`: a refresh after live events, without the loading state. */
  async function load({ quiet = false } = {}) {
    const granularity = form.elements.granularity.value;
    const days = Number(form.elements.range.value);
    if ((days * 24) / HOURS[granularity] > MAX_BUCKETS) {
      setState(section, "error", "Too many points: choose a coarser granularity or a shorter range.");
      return;
    }
    if (!quiet) setState(section, "loading");
    const to = new Date();
    try {
      const data = await ctx.request(SERIES, {
        id: ctx.applicationId,
        from: isoDaysAgo(days, to),
        to: to.toISOString(),
        granularity,
        pool: poolPicker.value || null,
        feature: form.elements.feature.value.trim() || null,
      });
      setState(section, null);
      render(section, data.application.consumption, "Credits used, expired and remaining");
    } catch (error) {
      setState(section, "error", `Could not load the consumption: ${error.message}`);
    }
  }

  return { setPools, load, refresh: coalesce(() => load({ quiet: true }), 5000) };
}

/** Totals, chart and spike list of a consumption series (also the End User widget's). */
export function render(section, series, label) {
  const buckets = series.buckets;
  const spikes = buckets.filter((bucket) => bucket.spike);
  section.querySelector('[data-role="totals"]').replaceChildren(
    h("span", { "data-field": "totalUsed", "data-value": series.totalUsed }, `Used ${formatInteger(series.totalUsed)}`),
    " · ",
    h("span", { "data-field": "totalExpired", "data-value": series.totalExpired }, `Expired ${formatInteger(series.totalExpired)}`),
    " · ",
    h(
      "span",
      { "data-field": "remaining" },
      `Remaining ${formatInteger(buckets.at(-1)?.remaining ?? 0)}`,
    ),
  );
  drawChart(section.querySelector('[data-role="chart"]'), {
    label,
    starts: buckets.map((bucket) => bucket.start),
    series: [
      { label: "Used", values: buckets.map((bucket) => bucket.used), color: "#1e63c6", kind: "bars" },
      { label: "Expired", values: buckets.map((bucket) => bucket.expired), color: "#8d6e00", kind: "bars" },
      { label: "Remaining", values: buckets.map((bucket) => bucket.remaining), color: "#2e7d32", kind: "line", scale: "right" },
    ],
    spikes: buckets.map((bucket) => bucket.spike),
  });
  const spikeList = section.querySelector('[data-role="spikes"]');
  if (spikeList) {
    spikeList.replaceChildren(
      ...(spikes.length
        ? [
            "Spikes: ",
            ...spikes.flatMap((bucket, index) => [
              index ? ", " : "",
              h("span", { class: "spike", "data-start": bucket.start }, timeElement(bucket.start), ` (${formatInteger(bucket.used)})`),
            ]),
          ]
        : ["No spikes in this range."]),
    );
  }
  if (!buckets.length) showState(section.querySelector('[data-role="state"]'), "empty");
}

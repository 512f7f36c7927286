// Request log: filtered pages of recent requests, the request-volume chart with spikes, and
// a live tail (requestLogTail) that adds new requests at the top as they happen.

import { drawChart } from "./chart.js";
import { formatDecimal, formatInteger, h, isoDaysAgo, setState, showState, timeElement } from "./dom.js";

const PAGE_SIZE = 25;
const MAX_ROWS = 200;
const ENTRY = `id time endpoint endUserExternalId apiKeyPrefix status outcome errorCode errorMessage latencyMs`;

const PAGE = `query UsageRequests($id: ID!, $first: Int!, $after: String, $filter: RequestLogFilter) {
  application(id: $id) {
    requestLog(first: $first, after: $after, filter: $filter) {
      pageInfo { hasNextPage endCursor }
      edges { node { ${ENTRY} } }
    }
  }
}`;

const VOLUME = `query UsageRequestVolume($id: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!) {
  application(id: $id) {
    requestVolume(from: $from, to: $to, granularity: $granularity) {
      totalRequests totalErrors
      buckets { start requests errors spike }
    }
  }
}`;

const TAIL = `subscription UsageRequestTail($id: ID!, $filter: RequestLogFilter) {
  requestLogTail(applicationId: $id, filter: $filter) { ${ENTRY} }
}`;

export function requestLogSection(ctx) {
  const section = document.getElementById("requests");
  const form = section.querySelector('[data-role="controls"]');
  const body = section.querySelector("tbody");
  const more = section.querySelector('[data-role="more"]');
  const volumeState = section.querySelector('[data-role="volume-state"]');
  let endCursor = null;
  let stopTail = null;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  form.elements.range.addEventListener("change", () => load());
  form.elements.tail.addEventListener("change", () => tail());
  more.addEventListener("click", () => loadPage(false));

  /** The filter of the form; `withRange` false for the tail (it has no end). */
  function filter(withRange) {
    const values = form.elements;
    const result = {};
    if (withRange) result.from = isoDaysAgo(Number(values.range.value));
    if (values.statusClass.value) result.statusClass = Number(values.statusClass.value);
    if (values.outcome.value) result.outcome = values.outcome.value;
    if (values.endpoint.value.trim()) result.endpoint = values.endpoint.value.trim();
    if (values.endUser.value.trim()) result.endUser = { externalId: values.endUser.value.trim() };
    if (values.apiKeyPrefix.value.trim()) result.apiKeyPrefix = values.apiKeyPrefix.value.trim();
    return result;
  }

  async function load() {
    await Promise.all([loadPage(true), loadVolume()]);
    tail();
  }

  async function loadPage(first) {
    if (first) setState(section, "loading");
    try {
      const data = await ctx.request(PAGE, {
        id: ctx.applicationId,
        first: PAGE_SIZE,
        after: first ? null : endCursor,
        filter: filter(true),
      });
      const connection = data.application.requestLog;
      const rows = connection.edges.map((edge) => row(edge.node));
      if (first) body.replaceChildren(...rows);
      else body.append(...rows);
      endCursor = connection.pageInfo.endCursor;
      more.hidden = !connection.pageInfo.hasNextPage;
      setState(section, body.childElementCount ? null : "empty", "No request matches.");
    } catch (error) {
      setState(section, "error", `Could not load the request log: ${error.message}`);
    }
  }

  async function loadVolume() {
    const days = Number(form.elements.range.value);
    const to = new Date();
    showState(volumeState, "loading");
    try {
      const data = await ctx.request(VOLUME, {
        id: ctx.applicationId,
        from: isoDaysAgo(days, to),
        to: to.toISOString(),
        granularity: days <= 1 ? "HOUR" : "DAY",
      });
      const volume = data.application.requestVolume;
      showState(volumeState, null);
      section.querySelector('[data-role="totals"]').replaceChildren(
        h("span", { "data-field": "totalRequests", "data-value": volume.totalRequests }, `${formatInteger(volume.totalRequests)} requests`),
        " · ",
        h("span", { "data-field": "totalErrors", "data-value": volume.totalErrors }, `${formatInteger(volume.totalErrors)} errors`),
      );
      drawChart(section.querySelector('[data-role="chart"]'), {
        label: "Requests and errors over time",
        starts: volume.buckets.map((bucket) => bucket.start),
        series: [
          { label: "Requests", values: volume.buckets.map((bucket) => bucket.requests), color: "#1e63c6", kind: "bars" },
          { label: "Errors", values: volume.buckets.map((bucket) => bucket.errors), color: "#c62828", kind: "bars" },
        ],
        spikes: volume.buckets.map((bucket) => bucket.spike),
      });
    } catch (error) {
      showState(volumeState, "error", `Could not load the request volume: ${error.message}`);
    }
  }

  function tail() {
    stopTail?.();
    stopTail = null;
    if (!form.elements.tail.checked) return;
    stopTail = ctx.live.subscribe(
      TAIL,
      { id: ctx.applicationId, filter: filter(false) },
      (data) => {
        const entry = data.requestLogTail;
        if (body.querySelector(`tr[data-request="${CSS.escape(entry.id)}"]`)) return; // already listed
        body.prepend(row(entry, true));
        while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
        setState(section, null);
      },
      (error) => setState(section, "error", `Live tail stopped: ${error.message}`),
    );
  }

  return { load, stop: () => stopTail?.() };
}

function row(entry, fresh = false) {
  const failed = entry.outcome !== "OK";
  return h(
    "tr",
    { "data-request": entry.id, class: [failed ? "failed" : "", fresh ? "flash" : ""].join(" ").trim() || null },
    h("td", {}, timeElement(entry.time)),
    h("td", { class: "endpoint" }, entry.endpoint),
    h("td", {}, entry.endUserExternalId ?? "—"),
    h("td", {}, entry.apiKeyPrefix ?? "—"),
    h("td", { class: "num", title: entry.outcome }, entry.status),
    h("td", { class: "error-text" }, entry.errorCode ? `${entry.errorCode}: ${entry.errorMessage ?? ""}` : ""),
    h("td", { class: "num" }, `${formatDecimal(entry.latencyMs)} ms`),
  );
}

// The End User view (an End User token): that End User's own balances and consumption only.

import { render as renderSeries } from "./consumption.js";
import { balanceCells } from "./end_users.js";
import { h, isoDaysAgo, labelCells, setState } from "./dom.js";

const BALANCE = "pool allocated used remaining expired status version burnRatePerDay projectedExhaustionAt";

const MINE = `query UsageMine($from: DateTime!, $to: DateTime!) {
  viewer {
    endUser {
      id externalId name
      balances { ${BALANCE} }
      consumption(from: $from, to: $to, granularity: DAY) {
        totalUsed totalExpired buckets { start used expired remaining spike }
      }
    }
  }
}`;

const MY_CHANGES = `subscription UsageMyBalance($id: ID!, $endUserId: ID!) {
  balanceChanged(applicationId: $id, endUserId: $endUserId) {
    pool allocated used remaining expired status version endUserId
  }
}`;

export function widgetView(ctx, endUser) {
  const balances = document.getElementById("my-balances");
  const chart = document.getElementById("my-consumption");
  const body = balances.querySelector("tbody");
  const shown = new Map(); // pool -> the balance on screen

  async function load() {
    setState(balances, "loading");
    const to = new Date();
    try {
      const data = await ctx.request(MINE, { from: isoDaysAgo(30, to), to: to.toISOString() });
      const mine = data.viewer.endUser;
      body.replaceChildren(...mine.balances.map(row));
      labelCells(balances.querySelector("table"));
      setState(balances, mine.balances.length ? null : "empty", "You have no credits yet.");
      setState(chart, null);
      renderSeries(chart, mine.consumption, "Your credits used over the last 30 days");
    } catch (error) {
      setState(balances, "error", `Could not load your balances: ${error.message}`);
    }
  }

  function row(balance) {
    shown.set(balance.pool, balance);
    return h(
      "tr",
      { "data-pool": balance.pool, "data-end-user": endUser.id },
      h("th", { scope: "row" }, balance.pool),
      ...balanceCells(balance, { withExpired: true }),
    );
  }

  function applyEvent(event) {
    const previous = shown.get(event.pool);
    if (previous && event.version <= previous.version) return;
    // The event has no burn rate: keep the one shown until the next load.
    const fresh = row({ ...previous, ...event });
    const current = body.querySelector(`tr[data-pool="${CSS.escape(event.pool)}"]`);
    if (current) current.replaceWith(fresh);
    else body.append(fresh);
    labelCells(balances.querySelector("table"));
    fresh.classList.add("flash");
  }

  function subscribe() {
    return ctx.live.subscribe(
      MY_CHANGES,
      { id: ctx.applicationId, endUserId: endUser.id },
      (data) => applyEvent(data.balanceChanged),
      (error) => setState(balances, "error", `Live updates stopped: ${error.message}`),
    );
  }

  return { load, subscribe };
}

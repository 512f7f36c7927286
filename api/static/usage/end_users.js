// End Users with their balance in the chosen pool: found by external id, filtered by status,
// sorted by a column, paginated by cursor; balances change in place on balanceChanged.

import { formatDecimal, h, labelCells, numberCell, setNumber, setState, statusBadge, timeElement } from "./dom.js";

const PAGE_SIZE = 20;
const BALANCE = "allocated used remaining status version burnRatePerDay projectedExhaustionAt";

const PAGE = `query UsageEndUsers($id: ID!, $pool: String!, $first: Int!, $after: String,
    $filter: EndUserFilter, $orderBy: EndUserOrder) {
  application(id: $id) {
    endUsers(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { node { id externalId name email balance(pool: $pool) { ${BALANCE} } } }
    }
  }
}`;

const FIND = `query UsageEndUser($id: ID!, $pool: String!, $externalId: String!) {
  application(id: $id) {
    endUser(externalId: $externalId) { id externalId name email balance(pool: $pool) { ${BALANCE} } }
  }
}`;

const ADJUST = `mutation UsageAdjustAllocation($input: AllocateCreditsInput!, $release: Boolean!) {
  allocateCredits(input: $input) @skip(if: $release) { balance { ${BALANCE} } errors { code message } }
  releaseCredits(input: $input) @include(if: $release) { balance { ${BALANCE} } errors { code message } }
}`;

const LIVE_FIELDS = ["allocated", "used", "remaining"];

/** An idempotency key per click (crypto.randomUUID needs a secure context; this does not). */
function idempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export function endUsersSection(ctx) {
  const section = document.getElementById("end-users");
  const form = section.querySelector('[data-role="controls"]');
  const body = section.querySelector("tbody");
  const prev = section.querySelector('[data-role="prev"]');
  const next = section.querySelector('[data-role="next"]');
  const pageLabel = section.querySelector('[data-role="page"]');
  const state = { applicationId: null, pool: null, order: { field: "CREATED", direction: "ASC" }, cursors: [null], endCursor: null };

  for (const header of section.querySelectorAll("th[data-sort]")) {
    const button = h("button", { type: "button", class: "sort" }, ...header.childNodes);
    button.addEventListener("click", () => sortBy(header.dataset.sort));
    header.replaceChildren(button);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    firstPage();
  });
  form.elements.status.addEventListener("change", firstPage);
  prev.addEventListener("click", () => {
    state.cursors.pop();
    load();
  });
  next.addEventListener("click", () => {
    state.cursors.push(state.endCursor);
    load();
  });

  function sortBy(field) {
    const same = state.order.field === field;
    // Used and remaining read best largest first; exhaustion and creation soonest first.
    const initial = field === "USED" || field === "REMAINING" ? "DESC" : "ASC";
    state.order = { field, direction: same ? (state.order.direction === "ASC" ? "DESC" : "ASC") : initial };
    firstPage();
  }

  function firstPage() {
    state.cursors = [null];
    load();
  }

  /** A new pool (or application) starts at the first page; the same one (a catch-up after
   * a reconnection) reloads the page shown. */
  function setPool(pool) {
    if (pool === state.pool && ctx.applicationId === state.applicationId) return load();
    state.pool = pool;
    state.applicationId = ctx.applicationId;
    firstPage();
  }

  async function load() {
    if (!state.pool) return;
    setState(section, "loading");
    const search = form.elements.search.value.trim();
    try {
      if (search) await loadOne(search);
      else await loadPage();
    } catch (error) {
      setState(section, "error", `Could not load the End Users: ${error.message}`);
    }
    for (const header of section.querySelectorAll("th[data-sort]")) {
      const active = header.dataset.sort === state.order.field && !search;
      if (active) header.setAttribute("aria-sort", state.order.direction === "ASC" ? "ascending" : "descending");
      else header.removeAttribute("aria-sort");
    }
  }

  async function loadPage() {
    const status = form.elements.status.value;
    const data = await ctx.request(PAGE, {
      id: ctx.applicationId,
      pool: state.pool,
      first: PAGE_SIZE,
      after: state.cursors.at(-1),
      filter: status ? { pool: state.pool, status: [status] } : null,
      orderBy: { ...state.order, pool: state.pool },
    });
    const connection = data.application.endUsers;
    render(connection.edges.map((edge) => edge.node));
    state.endCursor = connection.pageInfo.endCursor;
    const page = state.cursors.length;
    const pages = Math.max(1, Math.ceil(connection.totalCount / PAGE_SIZE));
    pageLabel.textContent = `Page ${page} of ${pages} · ${connection.totalCount} End Users`;
    prev.disabled = page === 1;
    next.disabled = !connection.pageInfo.hasNextPage;
    setState(section, connection.edges.length ? null : "empty", "No End User matches.");
  }

  async function loadOne(externalId) {
    const data = await ctx.request(FIND, { id: ctx.applicationId, pool: state.pool, externalId });
    const found = data.application.endUser;
    render(found ? [found] : []);
    pageLabel.textContent = found ? "1 End User found" : "";
    prev.disabled = next.disabled = true;
    setState(section, found ? null : "empty", `No End User has the external id “${externalId}”.`);
  }

  function render(endUsers) {
    body.replaceChildren(
      ...endUsers.map((endUser) =>
        h(
          "tr",
          { "data-end-user": endUser.id, "data-external-id": endUser.externalId, "data-version": endUser.balance?.version ?? -1 },
          h(
            "th",
            { scope: "row" },
            endUser.name ?? endUser.externalId,
            h("span", { class: "key" }, endUser.externalId),
          ),
          ...balanceCells(endUser.balance),
          ctx.role === "ADMIN" ? adjustCell(endUser) : null,
        ),
      ),
    );
    section.querySelector("th[data-admin]").hidden = ctx.role !== "ADMIN";
    labelCells(section.querySelector("table"));
  }

  /** Allocate or release credits of the pool to one End User (ADMIN keys). */
  function adjustCell(endUser) {
    const label = `Credits to allocate to or release from ${endUser.name ?? endUser.externalId}`;
    const amount = h("input", { type: "number", min: 1, step: 1, value: 10, "aria-label": label, class: "amount" });
    const message = h("span", { class: "adjust-message", role: "status" });
    const adjust = async (release) => {
      const credits = Number(amount.value);
      if (!Number.isInteger(credits) || credits < 1) {
        message.textContent = "Enter a whole number of credits.";
        return;
      }
      message.textContent = "…";
      try {
        const data = await ctx.request(ADJUST, {
          release,
          input: { applicationId: ctx.applicationId, endUser: { id: endUser.id }, pool: state.pool, credits, idempotencyKey: idempotencyKey() },
        });
        const payload = release ? data.releaseCredits : data.allocateCredits;
        if (payload.errors.length) {
          message.textContent = payload.errors.map((error) => error.message).join("; ");
          return;
        }
        message.textContent = release ? `Released ${credits}` : `Allocated ${credits}`;
        applyEvent({ ...payload.balance, pool: state.pool, endUserId: endUser.id });
      } catch (error) {
        message.textContent = error.message;
      }
    };
    return h(
      "td",
      { class: "adjust" },
      amount,
      h("button", { type: "button", onclick: () => adjust(false) }, "Allocate"),
      h("button", { type: "button", class: "secondary", onclick: () => adjust(true) }, "Release"),
      message,
    );
  }

  function applyEvent(event) {
    if (event.pool !== state.pool) return;
    const row = body.querySelector(`tr[data-end-user="${CSS.escape(String(event.endUserId))}"]`);
    if (!row || event.version <= Number(row.dataset.version)) return;
    row.dataset.version = event.version;
    for (const field of LIVE_FIELDS) {
      setNumber(row.querySelector(`[data-field="${field}"]`), event[field]);
    }
    row.querySelector('[data-field="status"]').replaceChildren(statusBadge(event.status));
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  return { setPool, load, applyEvent };
}

export function balanceCells(balance, { withExpired = false } = {}) {
  if (!balance) {
    return [h("td", { colspan: withExpired ? 7 : 6, class: "muted" }, "No balance in this pool.")];
  }
  return [
    ...LIVE_FIELDS.map((field) => numberCell(balance[field], field)),
    ...(withExpired ? [numberCell(balance.expired, "expired")] : []),
    h("td", { "data-field": "status" }, statusBadge(balance.status)),
    h("td", { class: "num", "data-field": "burnRatePerDay" }, formatDecimal(balance.burnRatePerDay)),
    h("td", { "data-field": "projectedExhaustionAt" }, timeElement(balance.projectedExhaustionAt)),
  ];
}

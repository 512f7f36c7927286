// Building DOM from data (text only, never HTML from the API) and formatting for people.

/** h("td", {class: "num"}, "12") — attributes with a null value are left out. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function formatInteger(value) {
  return value === null || value === undefined ? "—" : integer.format(value);
}

export function formatDecimal(value) {
  return value === null || value === undefined ? "—" : decimal.format(value);
}

/** A table cell holding a number: formatted for people, raw in data-value. */
export function numberCell(value, field) {
  return h("td", { class: "num", "data-field": field, "data-value": value }, formatInteger(value));
}

/** Changes a number cell in place (keeping its attributes, such as its card label). */
export function setNumber(cell, value) {
  cell.dataset.value = value;
  cell.textContent = formatInteger(value);
}

const localTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const localDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const utcTime = new Intl.DateTimeFormat("en-GB", {
  dateStyle: "medium",
  timeStyle: "medium",
  timeZone: "UTC",
});

/** A <time> in the viewer's zone, with the UTC instant on hover. */
export function timeElement(iso, { dateOnly = false } = {}) {
  if (!iso) return h("span", {}, "—");
  const instant = new Date(iso);
  const shown = (dateOnly ? localDate : localTime).format(instant);
  return h("time", { datetime: instant.toISOString(), title: `${utcTime.format(instant)} UTC` }, shown);
}

const utcMonth = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric", timeZone: "UTC" });

export function formatUtcMonth(iso) {
  return utcMonth.format(new Date(iso));
}

export function statusBadge(status) {
  return h("span", { class: `badge badge-${String(status).toLowerCase()}` }, status.replace("_", " "));
}

/** Shows a section's loading, empty or error state (or clears it with kind null). */
export function setState(section, kind, message = "") {
  const box = section.querySelector('[data-role="state"]');
  showState(box, kind, message);
}

export function showState(box, kind, message = "") {
  box.dataset.kind = kind ?? "";
  box.textContent = kind === null ? "" : message || { loading: "Loading…", empty: "Nothing yet." }[kind] || "";
  if (kind === "error") box.setAttribute("role", "alert");
  else box.removeAttribute("role");
}

export function isoDaysAgo(days, from = new Date()) {
  return new Date(from.getTime() - days * 86_400_000).toISOString();
}

/** Labels each body cell with its column's header, for the card layout of narrow screens. */
export function labelCells(table) {
  const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, index) => {
      if (cell.colSpan === 1 && index > 0) cell.dataset.label = headers[index];
    });
  }
}

/**
 * Runs `work` once, `wait` ms after the first of a run of calls: at most once per `wait` however
 * steady the calls (a busy application's events never starve the refresh).
 */
export function coalesce(work, wait) {
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      work();
    }, wait);
  };
}

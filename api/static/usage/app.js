// The Usage page: signs in with an API key or an End User token, shows one application's
// usage (or, for an End User token, that End User's own), and keeps it live over WebSocket.

import { allocationSection } from "./allocation.js";
import { ALERTS_SUBSCRIPTION, alertsSection } from "./alerts.js";
import { billingSection } from "./billing.js";
import { consumptionSection } from "./consumption.js";
import { h } from "./dom.js";
import { endUsersSection } from "./end_users.js";
import { exportSection } from "./export.js";
import { createHttpClient, createLiveClient, Unauthenticated } from "./graphql.js";
import { poolsSection } from "./pools.js";
import { requestLogSection } from "./request_log.js";
import { widgetView } from "./widget.js";

// The tab's session only: never localStorage, never a cookie.
const CREDENTIAL_KEY = "usagegraph.credential";
const APPLICATION_KEY = "usagegraph.application";

const VIEWER = `query UsageViewer {
  viewer {
    role
    organization { name }
    application { id name }
    apiKey { name keyId }
    endUser { id externalId name }
  }
}`;

const APPLICATIONS = `query UsageApplications { applications { id name plan } }`;

const BALANCE_CHANGES = `subscription UsageBalances($id: ID!) {
  balanceChanged(applicationId: $id) {
    applicationId pool version allocated used remaining expired status endUserId
  }
}`;

const LIVE_LABELS = {
  idle: "Live: off",
  connecting: "Live: connecting…",
  live: "Live",
  reconnecting: "Live: reconnecting…",
  refused: "Live: refused",
};

const $ = (id) => document.getElementById(id);

/** A key handed over in the URL fragment (`#key=...`) moves to the tab's session at once. */
function takeCredential() {
  const handed = new URLSearchParams(location.hash.slice(1)).get("key");
  if (handed) {
    sessionStorage.setItem(CREDENTIAL_KEY, handed);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(CREDENTIAL_KEY);
}

let session = null; // { live, stops: [unsubscribe...] } while signed in

function notify(message, kind = "error") {
  const notice = $("notice");
  notice.textContent = message;
  if (message) notice.dataset.kind = kind;
  else delete notice.dataset.kind;
  notice.hidden = !message;
}

function setLive(state) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = LIVE_LABELS[state];
}

function showOnly(id) {
  for (const view of ["signin", "dashboard", "widget"]) $(view).hidden = view !== id;
  $("session").hidden = id === "signin";
}

function signOut(message = "") {
  for (const stop of session?.stops ?? []) stop();
  session?.live.dispose();
  session = null;
  sessionStorage.removeItem(CREDENTIAL_KEY);
  sessionStorage.removeItem(APPLICATION_KEY);
  setLive("idle");
  showOnly("signin");
  $("signin-error").textContent = message;
  $("credential").value = "";
  $("credential").focus();
}

async function signIn(credential) {
  const onUnauthenticated = () =>
    signOut("The key or token was refused: it is revoked, expired or mistyped. Sign in again.");
  const request = createHttpClient(credential, onUnauthenticated);
  let viewer;
  try {
    viewer = (await request(VIEWER)).viewer;
  } catch (error) {
    if (!(error instanceof Unauthenticated)) {
      showOnly("signin");
      $("signin-error").textContent = `Could not sign in: ${error.message}`;
    }
    return;
  }
  const live = createLiveClient(credential, {
    onState: setLive,
    onReconnected: () => current.onReconnected?.(),
    onUnauthenticated,
  });
  const current = { live, stops: [], onReconnected: null };
  session = current;
  notify("");
  $("who").textContent = viewer.endUser
    ? `End User ${viewer.endUser.name ?? viewer.endUser.externalId}`
    : `${viewer.apiKey?.name ?? "API key"} · ${viewer.role}`;
  if (viewer.endUser) {
    await showEndUser(current, request, viewer);
  } else {
    await showApplications(current, request, viewer);
  }
}

/** `current` is this sign-in's session: a sign-out meanwhile leaves it behind, harmlessly. */
async function showEndUser(current, request, viewer) {
  showOnly("widget");
  const picker = $("application");
  picker.replaceChildren(h("option", { value: viewer.application.id }, viewer.application.name));
  picker.disabled = true;
  const ctx = { request, live: current.live, applicationId: viewer.application.id };
  const widget = widgetView(ctx, viewer.endUser);
  current.stops.push(widget.subscribe());
  current.onReconnected = widget.load;
  await widget.load();
}

async function showApplications(current, request, viewer) {
  let applications;
  try {
    applications = viewer.application ? [viewer.application] : (await request(APPLICATIONS)).applications;
  } catch (error) {
    notify(`Could not list the applications: ${error.message}`);
    return;
  }
  showOnly("dashboard");
  const picker = $("application");
  picker.disabled = applications.length < 2;
  if (!applications.length) {
    picker.replaceChildren();
    notify("This organization has no application yet.", "info");
    return;
  }
  picker.replaceChildren(...applications.map((app) => h("option", { value: app.id }, app.name)));
  const remembered = sessionStorage.getItem(APPLICATION_KEY);
  if (applications.some((app) => app.id === remembered)) picker.value = remembered;
  picker.onchange = () => {
    sessionStorage.setItem(APPLICATION_KEY, picker.value);
    showApplication(current, request, viewer.role, applications.find((app) => app.id === picker.value));
  };
  await showApplication(current, request, viewer.role, applications.find((app) => app.id === picker.value));
}

// The sections are built once; each load uses the application chosen at that moment.
let sections = null;

async function showApplication(current, request, role, application) {
  const { live } = current;
  for (const stop of current.stops.splice(0)) stop();
  $("app-lede").textContent = `${application.name}${application.plan ? ` · plan ${application.plan}` : ""}`;
  const ctx = { request, live, role, applicationId: application.id };
  if (sections) sections.ctx = ctx;
  else sections = buildSections(ctx);
  const { pools, consumption, allocation, endUsers, requestLog, billing, alerts } = sections;

  const loadAll = async () => {
    const poolList = await pools.load();
    consumption.setPools(poolList);
    endUsers.setPool(allocation.setPools(poolList));
    await Promise.all([consumption.load(), allocation.load(), alerts.load(), requestLog.load(), billing.load()]);
  };
  current.onReconnected = loadAll; // events missed while disconnected
  current.stops.push(
    live.subscribe(BALANCE_CHANGES, { id: application.id }, ({ balanceChanged: event }) => {
      if (event.applicationId !== application.id) return; // a late event of the previous choice
      if (event.endUserId === null) {
        pools.applyEvent(event);
        consumption.refresh();
      } else {
        endUsers.applyEvent(event);
        allocation.refresh();
      }
    }, liveFailed),
    live.subscribe(ALERTS_SUBSCRIPTION, { id: application.id }, ({ lowCreditAlerts: alert }) => alerts.add(alert), liveFailed),
    () => requestLog.stop(),
  );
  await loadAll();
}

function liveFailed(error) {
  notify(`Live updates stopped: ${error.message}. Reload the page to try again.`);
}

/** Every section, reading the current application from one shared, replaceable context. */
function buildSections(initial) {
  const holder = { ctx: initial };
  const ctx = {
    request: (...args) => holder.ctx.request(...args),
    get live() {
      return holder.ctx.live;
    },
    get applicationId() {
      return holder.ctx.applicationId;
    },
    get role() {
      return holder.ctx.role;
    },
  };
  const endUsers = endUsersSection(ctx);
  const built = {
    pools: poolsSection(ctx),
    consumption: consumptionSection(ctx),
    allocation: allocationSection(ctx, { onPoolChange: (pool) => endUsers.setPool(pool) }),
    endUsers,
    requestLog: requestLogSection(ctx),
    billing: billingSection(ctx),
    alerts: alertsSection(ctx),
  };
  exportSection(ctx);
  return Object.defineProperty(built, "ctx", { set: (next) => (holder.ctx = next) });
}

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const credential = $("credential").value.trim();
    if (!credential) return;
    sessionStorage.setItem(CREDENTIAL_KEY, credential);
    signIn(credential);
  });
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("offline", () => notify("You are offline: the page will catch up when the network is back."));
  window.addEventListener("online", () => notify(""));
  const credential = takeCredential();
  if (credential) signIn(credential);
  else showOnly("signin");
}

start();

// Low-credit alerts: the latest ones, and each new one as it happens (lowCreditAlerts).
// The list also holds webhook endpoints disabled for failing (no pool, no subscription).

import { endUserName } from "./allocation.js";
import { formatInteger, h, setState, statusBadge, timeElement } from "./dom.js";

const ALERT =
  "id pool kind remaining threshold at acknowledged endUser { id externalId name } webhookEndpoint { url }";

const LATEST = `query UsageAlerts($id: ID!) {
  application(id: $id) { alerts(first: 5) { totalCount edges { node { ${ALERT} } } } }
}`;

export const ALERTS_SUBSCRIPTION = `subscription UsageAlertFeed($id: ID!) {
  lowCreditAlerts(applicationId: $id) { ${ALERT} }
}`;

const ACKNOWLEDGE = `mutation UsageAcknowledgeAlert($id: ID!) {
  acknowledgeAlert(id: $id) { alert { ${ALERT} } errors { code message } }
}`;

const MAX_SHOWN = 5;

export function alertsSection(ctx) {
  const section = document.getElementById("alerts");
  const list = section.querySelector('[data-role="list"]');

  async function load() {
    try {
      const data = await ctx.request(LATEST, { id: ctx.applicationId });
      const { edges, totalCount } = data.application.alerts;
      const alerts = edges.map((edge) => edge.node);
      list.replaceChildren(...alerts.map((alert) => item(alert)));
      section.querySelector('[data-role="count"]').textContent =
        totalCount > alerts.length ? `The latest ${alerts.length} of ${formatInteger(totalCount)} alerts.` : "";
      setState(section, alerts.length ? null : "empty", "No low-credit alert.");
    } catch (error) {
      setState(section, "error", `Could not load the alerts: ${error.message}`);
    }
  }

  function add(alert) {
    list.querySelector(`[data-alert="${CSS.escape(alert.id)}"]`)?.remove();
    list.prepend(item(alert, true));
    while (list.childElementCount > MAX_SHOWN) list.lastElementChild.remove();
    setState(section, null);
  }

  /** One alert; ADMIN keys can acknowledge it. */
  function item(alert, fresh = false) {
    const line = describe(alert, fresh);
    if (alert.acknowledged) {
      line.append(h("span", { class: "muted" }, " · acknowledged"));
    } else if (ctx.role === "ADMIN") {
      const button = h("button", { type: "button", class: "secondary small" }, "Acknowledge");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const payload = (await ctx.request(ACKNOWLEDGE, { id: alert.id })).acknowledgeAlert;
          if (payload.errors.length) throw new Error(payload.errors.map((error) => error.message).join("; "));
          line.replaceWith(item(payload.alert));
        } catch (error) {
          button.disabled = false;
          line.append(h("span", { class: "error" }, ` ${error.message}`));
        }
      });
      line.append(" ", button);
    }
    return line;
  }

  return { load, add };
}

function describe(alert, fresh) {
  const attributes = { "data-alert": alert.id, "data-kind": alert.kind, class: fresh ? "flash" : null };
  if (alert.pool === null) {
    const url = alert.webhookEndpoint ? alert.webhookEndpoint.url : "(deleted)";
    return h("li", attributes, h("strong", {}, "Webhook endpoint"), ` ${url} disabled for failing · `,
      timeElement(alert.at));
  }
  return h(
    "li",
    attributes,
    statusBadge(alert.kind),
    " ",
    h("strong", {}, alert.endUser ? endUserName(alert.endUser) : `Pool ${alert.pool}`),
    alert.endUser ? ` in ${alert.pool}` : "",
    ` · ${formatInteger(alert.remaining)} left`,
    alert.threshold === null ? "" : ` (threshold ${formatInteger(alert.threshold)})`,
    " · ",
    timeElement(alert.at),
  );
}

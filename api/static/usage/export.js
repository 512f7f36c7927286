// Export: asks the API for a signed, short-lived link (exportUrl) and downloads through it.

import { h, setState } from "./dom.js";

const LINK = `query UsageExportUrl($id: ID!, $type: ExportType!, $from: DateTime!, $to: DateTime!,
    $format: ExportFormat!) {
  application(id: $id) { exportUrl(type: $type, from: $from, to: $to, format: $format) }
}`;

function utcDate(date) {
  return date.toISOString().slice(0, 10);
}

export function exportSection(ctx) {
  const section = document.getElementById("export");
  const form = section.querySelector('[data-role="controls"]');
  const today = new Date();
  form.elements.to.value = utcDate(today);
  form.elements.from.value = utcDate(new Date(today.getTime() - 30 * 86_400_000));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { type, from, to, format } = form.elements;
    if (from.value > to.value) {
      setState(section, "error", "The start date is after the end date.");
      return;
    }
    // Whole UTC days, the end day included.
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    setState(section, "loading", "Preparing the download…");
    try {
      const data = await ctx.request(LINK, {
        id: ctx.applicationId,
        type: type.value,
        from: `${from.value}T00:00:00Z`,
        to: end.toISOString(),
        format: format.value,
      });
      const link = h("a", { href: data.application.exportUrl, download: "", hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setState(section, "done", `Download started: ${type.value.toLowerCase()} from ${from.value} to ${to.value} (UTC).`);
    } catch (error) {
      setState(section, "error", `Could not export: ${error.message}`);
    }
  });
}

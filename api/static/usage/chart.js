// Time-series charts drawn with the vendored uPlot; spikes are marked with red points.

import { formatInteger } from "./dom.js";

const charts = new WeakMap();
const fromZero = (_, min, max) => [0, Math.max(max, 1)];

/**
 * Draws (or redraws) a chart in `container`.
 * series: [{label, values, color, kind: "bars" | "line", scale: "y" | "right"}]
 * spikes: booleans per bucket, marked on the first series.
 */
export function drawChart(container, { label, starts, series, spikes }) {
  charts.get(container)?.destroy();
  container.replaceChildren();
  if (!starts.length) return;
  const uPlot = window.uPlot;
  const x = starts.map((iso) => Date.parse(iso) / 1000);
  const hasRight = series.some((item) => item.scale === "right");
  const data = [x, ...series.map((item) => item.values)];
  const options = {
    title: undefined,
    width: Math.max(container.clientWidth, 280),
    height: container.clientWidth < 500 ? 200 : 260,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: fromZero }, right: { range: fromZero } },
    axes: [
      {},
      { values: (_, ticks) => ticks.map(formatInteger), size: 60 },
      ...(hasRight
        ? [{ scale: "right", side: 1, grid: { show: false }, values: (_, ticks) => ticks.map(formatInteger), size: 70 }]
        : []),
    ],
    series: [
      {},
      ...series.map((item) => ({
        label: item.label,
        stroke: item.color,
        fill: item.kind === "bars" ? `${item.color}88` : undefined,
        width: item.kind === "bars" ? 0 : 2,
        scale: item.scale ?? "y",
        paths: item.kind === "bars" ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
        points: { show: false },
        value: (_, value) => formatInteger(value),
      })),
    ],
  };
  if (spikes?.some(Boolean)) {
    data.push(series[0].values.map((value, index) => (spikes[index] ? value : null)));
    options.series.push({
      label: "Spike",
      stroke: "#c62828",
      paths: () => null,
      points: { show: true, size: 9, fill: "#c62828", stroke: "#c62828" },
      value: (_, value) => (value === null ? "" : formatInteger(value)),
    });
  }
  const plot = new uPlot(options, data, container);
  plot.root.setAttribute("role", "img");
  plot.root.setAttribute("aria-label", label);
  charts.set(container, plot);
  watchWidth(container);
}

const observed = new WeakSet();

function watchWidth(container) {
  if (observed.has(container)) return;
  observed.add(container);
  new ResizeObserver(() => {
    const plot = charts.get(container);
    const width = Math.max(container.clientWidth, 280);
    if (plot && Math.abs(plot.width - width) > 4) {
      plot.setSize({ width, height: plot.height });
    }
  }).observe(container);
}

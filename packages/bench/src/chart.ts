// An SVG chart of one run's results, written next to results.json: every ratio as a bar with its goal
// as a tick (green when met), then the latency percentiles side by side on a log scale. Plain SVG
// text, no dependency: it renders on GitHub and in any browser.
import { judged, type Result } from "./measure.js";

const W = 900;
const LABEL = 260;
const ROW = 22;
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function chartSvg(results: Result[], title: string): string {
  const ratios = results.filter((r) => r.ratio !== undefined);
  const lat = results.filter((r) => r.latency);
  const out: string[] = [];
  let y = 40;
  const text = (x: number, yy: number, s: string, extra = "") =>
    out.push(
      `<text x="${x}" y="${yy}" font-family="sans-serif" ${extra.includes("font-size") ? extra : `font-size="12" ${extra}`}>${esc(s)}</text>`,
    );
  text(10, 22, title, 'font-weight="bold" font-size="14"');

  // Ratios: a scale that fits the largest ratio or goal, at most 6×; longer bars are clipped and labelled.
  const top = Math.min(6, Math.max(1.2, ...ratios.map((r) => Math.max(r.ratio ?? 0, r.goal ?? 0))));
  const px = (v: number) => LABEL + (Math.min(v, top) / top) * (W - LABEL - 80);
  text(10, y, "ratio to its baseline (bar) and goal (tick)", 'fill="#555"');
  y += 10;
  for (const r of ratios) {
    const goals = judged(r);
    const missed = goals.some((g) => !g.met);
    const colour = goals.length === 0 ? "#8aa4c8" : missed ? "#d9534f" : "#4caf50";
    text(10, y + 15, `${r.name} / ${r.of}`);
    out.push(`<rect x="${LABEL}" y="${y + 4}" width="${px(r.ratio!) - LABEL}" height="${ROW - 8}" fill="${colour}"/>`);
    text(px(r.ratio!) + 4, y + 15, `${r.ratio!.toFixed(2)}×`);
    if (r.goal !== undefined)
      out.push(`<line x1="${px(r.goal)}" x2="${px(r.goal)}" y1="${y + 1}" y2="${y + ROW - 1}" stroke="#000" stroke-width="2"/>`);
    y += ROW;
  }
  out.push(`<line x1="${px(1)}" x2="${px(1)}" y1="50" y2="${y}" stroke="#999" stroke-dasharray="3,3"/>`);
  text(px(1) - 8, y + 14, "1×", 'fill="#999"');
  y += 36;

  // Latency: ms on a log scale from 0.1 ms to the largest p99.9.
  if (lat.length > 0) {
    text(10, y, "latency, publish to handler start, at half of each side's maximum (log scale, ms)", 'fill="#555"');
    y += 10;
    const hi = Math.max(1, ...lat.map((r) => r.latency!.p999));
    const lx = (ms: number) => LABEL + (Math.log10(Math.max(ms, 0.1) / 0.1) / Math.log10(hi / 0.1)) * (W - LABEL - 90);
    const shades = { p50: "#9ecae1", p99: "#4292c6", p999: "#08519c" } as const;
    for (const r of lat) {
      for (const p of ["p50", "p99", "p999"] as const) {
        const v = r.latency![p];
        text(10, y + 15, `${r.name} ${p === "p999" ? "p99.9" : p}`);
        out.push(`<rect x="${LABEL}" y="${y + 4}" width="${Math.max(1, lx(v) - LABEL)}" height="${ROW - 8}" fill="${shades[p]}"/>`);
        text(lx(v) + 4, y + 15, `${v} ms`);
        y += ROW;
      }
      y += 6;
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" viewBox="0 0 ${W} ${y + 10}">
<rect width="100%" height="100%" fill="#fff"/>
${out.join("\n")}
</svg>
`;
}

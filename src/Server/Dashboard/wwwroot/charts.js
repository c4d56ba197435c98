// Small SVG charts drawn here (no library): a line chart of daily series and a bar chart.
import { el, svg } from './dom.js';

export const palette = ['#3366cc', '#dc3912', '#ff9900', '#109618', '#990099', '#0099c6', '#dd4477', '#66aa00', '#b82e2e', '#316395'];

/**
 * Daily series as lines: days ['2026-12-01', …], series [{name, values: [number|null per day]}].
 * format: how an axis value reads. Returns a figure with the chart and its legend.
 */
export function lineChart({ title, days, series, format = v => String(v), max }) {
  const W = 420, H = 180, L = 48, R = 8, T = 10, B = 26;
  const values = series.flatMap(s => s.values).filter(v => v !== null && v !== undefined && !Number.isNaN(v));
  const top = max ?? Math.max(1e-9, ...values);
  const x = i => L + (days.length <= 1 ? (W - L - R) / 2 : i * (W - L - R) / (days.length - 1));
  const y = v => T + (H - T - B) * (1 - v / top);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  for (const f of [0, 0.5, 1]) {
    chart.append(svg('line', { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: 'grid' }),
      svg('text', { x: L - 4, y: y(top * f) + 4, class: 'axis', 'text-anchor': 'end' }, format(top * f)));
  }
  if (days.length > 0) {
    chart.append(svg('text', { x: L, y: H - 6, class: 'axis' }, days[0].slice(5)),
      svg('text', { x: W - R, y: H - 6, class: 'axis', 'text-anchor': 'end' }, days[days.length - 1].slice(5)));
  }
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => v === null || v === undefined || Number.isNaN(v) ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const colour = palette[k % palette.length];
    // A line through each run of days that have a value; a lone day is a dot.
    let run = [];
    const flush = () => {
      if (run.length > 1) chart.append(svg('polyline', { points: run.join(' '), fill: 'none', stroke: colour, 'stroke-width': 2 }));
      else if (run.length === 1) { const [px, py] = run[0].split(','); chart.append(svg('circle', { cx: px, cy: py, r: 3, fill: colour })); }
      run = [];
    };
    for (const p of points) { if (p) run.push(p); else flush(); }
    flush();
  });
  const legend = el('div', { class: 'legend' }, series.map((s, k) => el('span', {}, el('i', { class: 'swatch c' + (k % palette.length) }), s.name)));
  return el('figure', { class: 'card chart-card' }, el('figcaption', {}, title), chart, legend);
}

/** Bars: [{label, value}], each labelled below. */
export function barChart({ title, bars, format = v => String(v) }) {
  const W = 420, H = 180, L = 48, R = 8, T = 10, B = 30;
  const top = Math.max(1e-9, ...bars.map(b => b.value));
  const w = (W - L - R) / Math.max(1, bars.length);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  for (const f of [0, 0.5, 1]) {
    const yy = T + (H - T - B) * (1 - f);
    chart.append(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid' }),
      svg('text', { x: L - 4, y: yy + 4, class: 'axis', 'text-anchor': 'end' }, format(top * f)));
  }
  bars.forEach((b, i) => {
    const h = (H - T - B) * b.value / top;
    chart.append(svg('rect', { x: L + i * w + 2, y: H - B - h, width: Math.max(1, w - 4), height: h, fill: palette[0] },
      svg('title', {}, `${b.label}: ${format(b.value)}`)));
    chart.append(svg('text', { x: L + i * w + w / 2, y: H - B + 14, class: 'axis', 'text-anchor': 'middle' }, b.label));
  });
  return el('figure', { class: 'card chart-card' }, el('figcaption', {}, title), chart);
}

/** A grid of cells coloured by value: rows × columns, cell(r, c) → number. */
export function heatmap({ title, rows, columns, cell, format = v => String(v) }) {
  const top = Math.max(1e-9, ...rows.flatMap(r => columns.map(c => cell(r, c) ?? 0)));
  const table = el('table', { class: 'heatmap' },
    el('thead', {}, el('tr', {}, el('th', {}, ''), columns.map(c => el('th', { scope: 'col' }, c)))),
    el('tbody', {}, rows.map(r => el('tr', {}, el('th', { scope: 'row' }, r), columns.map(c => {
      const v = cell(r, c) ?? 0;
      const level = v === 0 ? 0 : 1 + Math.min(4, Math.floor(4 * v / top));
      return el('td', { class: `heat-${level}`, title: `${r}, ${c}: ${format(v)}` }, v === 0 ? '' : format(v));
    })))));
  return el('figure', { class: 'card chart-card' }, el('figcaption', {}, title), table);
}

// The overview (/): totals over 7, 30 and 90 days, the layers now, the last runs, daily trends
// per layer, escalations by day and route, and tasks and cost by complexity.
import { el, show, fmt } from './dom.js';
import { get, ApiError } from './api.js';
import { lineChart, barChart, heatmap } from './charts.js';

function lastDays(n) {
  const days = [];
  const today = new Date();
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    days.push(d.toISOString().slice(0, 10));
  }
  return days;
}

function totals(rows, days) {
  const since = lastDays(days)[0];
  let requests = 0, succeeded = 0, timed = 0, duration = 0, cost = 0;
  for (const r of rows) {
    if (r.day < since) continue;
    requests += r.requests; succeeded += r.succeeded; cost += r.cost;
    timed += r.timed ?? 0; duration += r.total_duration_ms ?? 0;
  }
  return { requests, rate: requests ? succeeded / requests : NaN, mean: timed ? duration / timed : NaN, cost };
}

// A run's cost: the store's figure, else its layers' (a finished run the service keeps), else none yet.
function costOf(r) {
  if (r.cost !== undefined) return r.cost;
  return r.layers ? Object.values(r.layers).reduce((a, l) => a + (l.cost ?? 0), 0) : undefined;
}

function card(label, value, id) {
  return el('div', { class: 'card figure', 'data-figure': id }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
}

export async function overview(main) {
  show(main, el('p', { class: 'muted' }, 'Loading…'));
  const absent = e => e instanceof ApiError && e.status === 404 ? null : Promise.reject(e);
  const [layers, runs, metrics, escalations, complexity, workers] = await Promise.all([
    get('/api/layers'), get('/api/runs?limit=10'),
    get('/api/metrics?days=90').catch(e => e instanceof ApiError && e.status === 404 ? null : Promise.reject(e)),
    get('/api/metrics/escalations?days=30').catch(e => e instanceof ApiError && e.status === 404 ? null : Promise.reject(e)),
    get('/api/metrics/complexity?days=90').catch(e => e instanceof ApiError && e.status === 404 ? null : Promise.reject(e)),
    get('/api/workers').catch(absent),   // 404: the service is no cluster coordinator
  ]);
  const rows = metrics?.layers ?? [];
  const sections = [];

  // Totals.
  sections.push(el('h2', {}, 'Totals'), metrics === null ? el('p', { class: 'muted' }, 'This service keeps no run store: there is no history.') :
    el('div', { class: 'cards' }, [7, 30, 90].map(d => {
      const t = totals(rows, d);
      return el('section', { class: 'period', 'data-days': d }, el('h3', {}, `Last ${d} days`),
        el('div', { class: 'cards' },
          card('tasks', fmt.int(t.requests), `tasks-${d}`),
          card('success rate', fmt.pct(t.rate), `rate-${d}`),
          card('mean duration', fmt.ms(t.mean), `duration-${d}`),
          card('cost', fmt.cost(t.cost), `cost-${d}`)));
    })));

  // Layers now.
  sections.push(el('h2', {}, 'Layers'), el('table', { class: 'grid', id: 'layers' },
    el('thead', {}, el('tr', {}, ['layer', 'status', 'capacity', 'running', 'queued', 'requests today', 'success today', 'confidence today', 'price / s'].map(h => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, layers.layers.map(l => el('tr', { 'data-layer': l.name },
      el('td', {}, l.name), el('td', {}, el('span', { class: `status ${l.status}` }, l.status)),
      el('td', { class: 'num' }, fmt.int(l.capacity)), el('td', { class: 'num' }, fmt.int(l.running)), el('td', { class: 'num' }, fmt.int(l.queue_depth)),
      el('td', { class: 'num' }, fmt.int(l.today?.requests ?? 0)), el('td', { class: 'num' }, fmt.pct(l.today?.success_rate)),
      el('td', { class: 'num' }, fmt.conf(l.today?.mean_confidence)), el('td', { class: 'num' }, String(l.price_per_second)))))));

  // The cluster's workers, when the service is a coordinator.
  if (workers !== null) {
    sections.push(el('h2', {}, 'Cluster workers'), workers.workers.length === 0 ? el('p', { class: 'muted' }, 'No worker has joined.') : el('table', { class: 'grid', id: 'workers' },
      el('thead', {}, el('tr', {}, ['worker', 'host', 'status', 'slots', 'in flight', 'succeeded', 'failed', 'memory for circuits', 'qubits', 'up'].map(h => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, workers.workers.map(w => el('tr', { 'data-worker': w.endpoint },
        el('td', {}, w.endpoint), el('td', {}, `${w.host} (pid ${w.pid})`), el('td', {}, el('span', { class: `status ${w.status}` }, w.status)),
        el('td', { class: 'num' }, fmt.int(w.slots)), el('td', { class: 'num' }, fmt.int(w.in_flight)),
        el('td', { class: 'num' }, fmt.int(w.succeeded)), el('td', { class: 'num' }, fmt.int(w.failed)),
        el('td', { class: 'num' }, `${fmt.int(w.memory_mb)} MB`), el('td', { class: 'num' }, w.max_qubits),
        el('td', { class: 'num' }, `${Math.round(w.up_seconds)} s`))))),
      (workers.lost ?? []).length === 0 ? null : el('p', { class: 'muted' }, `lost: ${workers.lost.map(l => l.endpoint).join(', ')}`));
  }

  // The last runs.
  sections.push(el('h2', {}, 'Last runs'), runs.runs.length === 0 ? el('p', { class: 'muted' }, 'No runs yet.') : el('table', { class: 'grid', id: 'runs' },
    el('thead', {}, el('tr', {}, ['run', 'graph', 'status', 'started', 'tasks', 'escalations', 'cost'].map(h => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, runs.runs.map(r => el('tr', { 'data-run': r.run_id },
      el('td', {}, el('a', { href: `/runs/${encodeURIComponent(r.run_id)}` }, r.run_id)), el('td', {}, r.graph),
      el('td', {}, el('span', { class: `status ${r.status}` }, r.status)), el('td', {}, fmt.time(r.started_at)),
      el('td', { class: 'num' }, fmt.int(r.tasks?.total)),
      el('td', { class: 'num' }, r.escalations > 0 ? el('span', { class: 'escalated', title: 'tasks moved to another layer' }, `↑ ${r.escalations}`) : '0'),
      el('td', { class: 'num' }, costOf(r) === undefined ? '–' : fmt.cost(costOf(r))))))));

  // Daily trends per layer.
  if (metrics !== null) {
    const days = lastDays(30);
    const names = [...new Set(rows.map(r => r.layer))].sort();
    const at = new Map(rows.map(r => [`${r.day}|${r.layer}`, r]));
    const series = pick => names.map(n => ({ name: n, values: days.map(d => { const r = at.get(`${d}|${n}`); return r ? pick(r) : null; }) }));
    sections.push(el('h2', {}, 'Daily, last 30 days'), el('div', { class: 'charts' },
      lineChart({ title: 'tasks per layer', days, series: series(r => r.requests), format: v => fmt.int(Math.round(v)) }),
      lineChart({ title: 'success rate per layer', days, series: series(r => r.requests ? r.succeeded / r.requests : null), format: v => fmt.pct(v), max: 1 }),
      lineChart({ title: 'cost per layer', days, series: series(r => r.cost), format: v => v.toFixed(3) })));
  }

  // Escalations: the rate, and where they went by day.
  if (escalations !== null && metrics !== null) {
    const days = lastDays(30);
    const routes = [...new Set(escalations.escalations.map(e => `${e.from} → ${e.to}`))].sort();
    const count = new Map(escalations.escalations.map(e => [`${e.day}|${e.from} → ${e.to}`, e.count]));
    const tasksByDay = new Map();
    for (const r of rows) tasksByDay.set(r.day, (tasksByDay.get(r.day) ?? 0) + r.requests);
    const perDay = new Map();
    for (const e of escalations.escalations) perDay.set(e.day, (perDay.get(e.day) ?? 0) + e.count);
    const total = escalations.escalations.reduce((a, e) => a + e.count, 0);
    const tasks30 = totals(rows, 30).requests;
    sections.push(el('h2', {}, 'Escalations, last 30 days'),
      el('p', { id: 'escalation-rate' }, `${fmt.int(total)} escalations over ${fmt.int(tasks30)} tasks: ${fmt.pct(tasks30 ? total / tasks30 : NaN)}`),
      el('div', { class: 'charts' },
        lineChart({ title: 'escalations per task, by day', days, series: [{ name: 'all layers', values: days.map(d => tasksByDay.get(d) ? (perDay.get(d) ?? 0) / tasksByDay.get(d) : null) }], format: v => fmt.pct(v) }),
        routes.length === 0 ? el('p', { class: 'muted' }, 'No escalations.') :
          heatmap({ title: 'escalations by day and route', rows: days.filter(d => perDay.has(d)), columns: routes, cell: (d, route) => count.get(`${d}|${route}`) ?? 0, format: v => fmt.int(v) })));
  }

  // Complexity.
  if (complexity !== null && complexity.buckets.length > 0) {
    sections.push(el('h2', {}, 'By complexity (the task rows the store keeps), last 90 days'), el('div', { class: 'charts' },
      barChart({ title: 'tasks by complexity', bars: complexity.buckets.map(b => ({ label: b.label, value: b.tasks })), format: v => fmt.int(Math.round(v)) }),
      barChart({ title: 'cost by complexity', bars: complexity.buckets.map(b => ({ label: b.label, value: b.cost })), format: v => v.toFixed(3) })));
  }
  show(main, el('h1', {}, 'Overview'), sections);
}

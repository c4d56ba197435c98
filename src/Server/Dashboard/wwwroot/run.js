// A run (/runs/{id}): its state and counts, live while it goes (its event stream, drawn at most
// four times a second however fast events come), its tasks with filters by status and layer, and
// a task's panel: where it ran and why it moved, its attempts, confidence, escalations and audit
// trail, and (for an operator) a manual escalation to another layer.
import { el, show, fmt } from './dom.js';
import { get, send, currentSession, allows, ApiError } from './api.js';
import { drawGraph, drawGantt } from './graphview.js';

const SHOWN = 500;   // rows drawn at once; the rest are counted, filtered, paged

const FINAL = { succeeded: 'succeeded', failed: 'failed', timed_out: 'failed', cancelled: 'cancelled', skipped: 'skipped', restored: 'succeeded', cached: 'succeeded' };

export async function runView(main, runId) {
  show(main, el('p', { class: 'muted' }, 'Loading…'));
  const session = await currentSession();
  let run = await get(`/api/runs/${encodeURIComponent(runId)}`);
  const tasks = new Map();          // id → {id, handler, status, layer, attempts, escalations, duration_ms, error}
  let filterStatus = '', filterLayer = '', page = 0, dirty = true, source = null;

  const head = el('div', { id: 'run-head' });
  const counts = el('div', { id: 'run-counts', class: 'cards' });
  const layerTable = el('div', { id: 'run-layers' });
  const filters = el('div', { class: 'row', id: 'filters' });
  const list = el('div', { id: 'task-list' });
  const panel = el('aside', { id: 'task-panel', class: 'card', hidden: true });
  const graphBox = el('div', { id: 'graph' });
  const ganttBox = el('div', { id: 'gantt' });
  show(main, el('h1', {}, 'Run ', el('code', {}, runId)), head, counts,
    el('h2', {}, 'Graph'), graphBox, el('h2', {}, 'Timeline'), ganttBox,
    el('h2', {}, 'Layers'), layerTable, el('h2', {}, 'Tasks'), filters, el('div', { class: 'split' }, list, panel));

  // The graph, drawn once and recoloured as tasks change state.
  let recolour = () => {};
  let critical = new Set();
  try {
    const graph = await get(`/api/runs/${encodeURIComponent(runId)}/graph`);
    critical = new Set(graph.critical_path ?? []);
    recolour = drawGraph(graphBox, graph, id => openPanel(id));
  } catch (e) {
    show(graphBox, el('p', { class: 'muted' }, e instanceof ApiError && e.status === 409 ? 'The service keeps this run\'s graph no more.' : e.message));
  }
  let ganttDrawn = false;
  // While the run goes the timeline grows from its events (a task's start and end times), redrawn at
  // most once a second; a run of more than 20,000 tasks gets its timeline when it ends.
  let lastLive = 0;
  function drawTimeline() {
    if (['running', 'open'].includes(run.status)) {
      if ((run.tasks?.total ?? 0) > 20000) { show(ganttBox, el('p', { class: 'muted' }, 'drawn when the run ends')); return; }
      if (performance.now() - lastLive < 1000) return;
      lastLive = performance.now();
      const now = Date.now() - Date.parse(run.started_at);
      for (const t of tasks.values()) if (t.live_start !== undefined && t.live_end === undefined) t.duration_ms = Math.max(0, now - t.started_ms);
      drawGantt(ganttBox, tasks, critical, now);
      return;
    }
    if (ganttDrawn) return;
    drawGantt(ganttBox, tasks, critical, run.wall_ms);
    ganttDrawn = tasks.size > 0;
  }

  function drawHead() {
    const cost = run.cost ?? (run.layers ? Object.values(run.layers).reduce((a, l) => a + (l.cost ?? 0), 0) : undefined);
    const finished = run.finished_at ?? run.ended_at;
    show(head, el('p', {},
      el('span', { id: 'run-status', class: `status ${run.status}` }, run.status), ' ',
      `graph ${run.graph ?? ''} · started ${fmt.time(run.started_at)}`,
      finished ? ` · finished ${fmt.time(finished)}` : '',
      run.wall_ms !== undefined ? ` · wall ${fmt.ms(run.wall_ms)}` : '',
      cost !== undefined ? ` · cost ${fmt.cost(cost)}` : ''));
  }

  function drawCounts() {
    let by = {};
    for (const t of tasks.values()) by[t.status] = (by[t.status] ?? 0) + 1;
    const total = run.tasks?.total ?? tasks.size;
    // An ended run's own counts (its list may be the store's sample of a large run).
    if (!['running', 'open'].includes(run.status) && run.tasks?.succeeded !== undefined)
      by = Object.fromEntries(Object.entries(run.tasks).filter(([k, v]) => k !== 'total' && v > 0));
    show(counts, [['total', total], ...Object.entries(by).sort()].map(([k, v]) =>
      el('div', { class: 'card figure', 'data-count': k }, el('div', { class: 'label' }, k), el('div', { class: 'value' }, fmt.int(v)))));
  }

  function drawLayers() {
    const by = new Map();
    for (const t of tasks.values()) {
      if (!t.layer) continue;
      const x = by.get(t.layer) ?? { tasks: 0, ok: 0, failed: 0, ms: 0 };
      x.tasks++; if (FINAL[t.status] === 'succeeded') x.ok++; if (FINAL[t.status] === 'failed') x.failed++; x.ms += t.duration_ms ?? 0;
      by.set(t.layer, x);
    }
    // A finished run's summary names its layers' costs ({name: {tasks, cost}}); a stored run's does not.
    const costs = new Map(Object.entries(run.layers ?? {}).map(([name, l]) => [name, l.cost]));
    show(layerTable, by.size === 0 ? null : el('table', { class: 'grid' },
      el('thead', {}, el('tr', {}, ['layer', 'tasks', 'succeeded', 'failed', 'time', 'cost'].map(h => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, [...by].sort().map(([name, x]) => el('tr', { 'data-layer': name }, el('td', {}, name), el('td', { class: 'num' }, fmt.int(x.tasks)),
        el('td', { class: 'num' }, fmt.int(x.ok)), el('td', { class: 'num' }, fmt.int(x.failed)), el('td', { class: 'num' }, fmt.ms(x.ms)),
        el('td', { class: 'num' }, costs.has(name) ? fmt.cost(costs.get(name)) : '–'))))));
  }

  function drawFilters() {
    const statuses = [...new Set([...tasks.values()].map(t => t.status))].sort();
    const layers = [...new Set([...tasks.values()].map(t => t.layer).filter(Boolean))].sort();
    const select = (id, label, values, current, set) => {
      const s = el('select', { id }, el('option', { value: '' }, `any ${label}`), values.map(v => el('option', { value: v, selected: v === current }, v)));
      s.addEventListener('change', () => { set(s.value); page = 0; dirty = true; });
      return s;
    };
    show(filters, select('filter-status', 'status', statuses, filterStatus, v => filterStatus = v), select('filter-layer', 'layer', layers, filterLayer, v => filterLayer = v));
  }

  function drawList() {
    const match = [...tasks.values()].filter(t => (!filterStatus || t.status === filterStatus) && (!filterLayer || t.layer === filterLayer));
    const pages = Math.max(1, Math.ceil(match.length / SHOWN));
    page = Math.min(page, pages - 1);
    const rows = match.slice(page * SHOWN, (page + 1) * SHOWN);
    const nav = pages <= 1 ? null : el('div', { class: 'row' },
      el('button', { type: 'button', disabled: page === 0, onclick: () => { page--; dirty = true; } }, '◀'),
      `page ${page + 1} of ${pages} (${fmt.int(match.length)} tasks)`,
      el('button', { type: 'button', disabled: page >= pages - 1, onclick: () => { page++; dirty = true; } }, '▶'));
    show(list, nav, el('table', { class: 'grid', id: 'tasks' },
      el('thead', {}, el('tr', {}, ['task', 'handler', 'status', 'layer', 'attempts', 'escalations', 'duration'].map(h => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.map(t => el('tr', { 'data-task': t.id, class: 'clickable', onclick: () => openPanel(t.id) },
        el('td', {}, t.id), el('td', {}, t.handler ?? ''), el('td', {}, el('span', { class: `status ${t.status}` }, t.status)), el('td', {}, t.layer ?? ''),
        el('td', { class: 'num' }, t.attempts ?? ''), el('td', { class: 'num' }, t.escalations ? el('span', { class: 'escalated' }, `↑ ${t.escalations}`) : (t.escalations ?? '')),
        el('td', { class: 'num' }, t.duration_ms === undefined ? '' : fmt.ms(t.duration_ms)))))),
      source === 'store' ? el('p', { class: 'muted' }, 'The store keeps a row for every task of a small run, and for a large one the tasks worth a look and a sample.') : null);
  }

  async function openPanel(taskId) {
    panel.hidden = false;
    show(panel, el('p', { class: 'muted' }, 'Loading…'));
    let t;
    try {
      t = await get(`/api/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(taskId)}`);
    } catch (e) {
      show(panel, el('h2', {}, taskId), el('p', { class: 'error' }, e.message));
      return;
    }
    const dl = (pairs) => el('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    const chosen = (t.audit ?? []).find(a => a.category === 'layer_selection')?.detail;
    const args = t.args === undefined ? undefined : JSON.stringify(t.args, null, 1);
    const parts = [el('h2', {}, t.id),
      dl([['handler', t.handler], ['arguments', args === undefined ? undefined : args.length > 4000 ? args.slice(0, 4000) + ' …' : args],
        ['status', t.status], ['first layer', t.initial_layer],
        ['layer chosen', chosen ? [chosen.layer, chosen.reason ? ` — ${chosen.reason}` : '',
          chosen.predicted_confidence !== undefined ? ` (predicted confidence ${fmt.conf(chosen.predicted_confidence)})` : '',
          chosen.predicted_cost !== undefined ? ` (predicted cost ${fmt.cost(chosen.predicted_cost)})` : ''].join('') : undefined],
        ['layer', t.layer], ['attempts', t.attempts],
        ['duration', t.duration_ms === undefined ? undefined : fmt.ms(t.duration_ms)], ['confidence', t.confidence === undefined ? undefined : fmt.conf(t.confidence)],
        ['cost', t.cost === undefined ? undefined : fmt.cost(t.cost)], ['output', t.output_summary], ['error', t.error], ['skipped because', t.skipped_because]]),
      el('h3', {}, 'Escalations'),
      (t.escalations ?? []).length === 0 ? el('p', { class: 'muted', id: 'no-escalations' }, 'none') : el('ol', { id: 'escalations' }, t.escalations.map(e =>
        el('li', {}, `${e.from} → ${e.to} on ${e.trigger}: ${e.reason}`, e.previous_confidence !== undefined ? ` (confidence was ${fmt.conf(e.previous_confidence)})` : '', e.rule ? ` — rule ${e.rule}` : '')))];
    if (t.audit) parts.push(el('h3', {}, 'Audit trail'), el('ol', { id: 'audit', class: 'audit' }, t.audit.map(a => el('li', {}, `${fmt.time(a.at)} ${a.category} `, el('code', {}, JSON.stringify(a.detail))))));
    const ended = !['running', 'open'].includes(run.status);
    if (ended && !session.read_only && allows(session.role, 'operator')) {
      const layers = await get('/api/layers');
      const to = el('select', { id: 'escalate-to' }, layers.layers.filter(l => l.name !== t.layer).map(l => el('option', { value: l.name }, l.name)));
      const why = el('input', { id: 'escalate-reason', type: 'text', placeholder: 'why (kept with the escalation)' });
      const result = el('p', { id: 'escalate-result', role: 'status' });
      const form = el('form', { id: 'escalate', class: 'row' }, el('label', {}, 'Run again on ', to), why, el('button', { type: 'submit' }, 'Escalate'), result);
      form.addEventListener('submit', async ev => {
        ev.preventDefault();
        try {
          const r = await send('POST', `/api/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(t.id)}/escalate`, { to: to.value, reason: why.value || null });
          location.assign(`/runs/${encodeURIComponent(r.run_id)}`);
        } catch (e) { show(result, el('span', { class: 'error' }, e.message)); }
      });
      parts.push(el('h3', {}, 'Manual escalation'), form);
    }
    show(panel, parts);
  }

  // The tasks as the service lists them (every task of a finished run it keeps; else the store's rows).
  // Returns how many it listed.
  async function loadTasks() {
    try {
      // Page by page (10,000 a request), up to the 200,000 tasks a graph is drawn by level for.
      let r, offset = 0, listed = 0;
      do {
        r = await get(`/api/runs/${encodeURIComponent(runId)}/tasks?limit=10000&offset=${offset}`);
        source = r.source;
        for (const t of r.tasks) tasks.set(t.id, t);
        listed += r.tasks.length;
        offset += r.tasks.length;
      } while (r.tasks.length > 0 && offset < r.total && offset < 200000);
      dirty = true;
      return listed;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 409)) throw e;   // a going run without a store: its events fill the list
      return 0;
    }
  }

  // Once a run has ended: its list read again until it holds every task (the service keeps the
  // finished run's tasks moments after its last event), at most for a few seconds.
  async function settle() {
    for (let i = 0; i < 20; i++) {
      try { run = await get(`/api/runs/${encodeURIComponent(runId)}`); } catch { /* the stream's record stands */ }
      tasks.clear();   // the list, not the events seen, says how each task ended
      ganttDrawn = false;
      const listed = await loadTasks().catch(() => 0);
      if (source === 'run' || listed >= (run.tasks?.total ?? 0)) break;
      await new Promise(r => setTimeout(r, 250));
    }
    dirty = true;
  }

  await loadTasks();
  drawHead();

  // Live: events into the map; the page redrawn on a timer, not per event.
  const timer = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    drawHead(); drawCounts(); recolour(tasks); drawTimeline(); drawLayers(); drawFilters(); drawList();
  }, 250);
  if (['running', 'open'].includes(run.status)) {
    const events = new EventSource(`/api/runs/${encodeURIComponent(runId)}/events`);
    const apply = ev => {
      const e = JSON.parse(ev.data);
      const t = tasks.get(e.task) ?? { id: e.task, status: 'waiting' };
      t.index = e.index;
      if (e.layer) t.layer = e.layer;
      if (e.attempt) t.attempts = e.attempt;
      t.status = { released: 'ready', started: 'running', retried: 'retrying' }[e.kind] ?? e.kind;
      if (e.kind === 'escalated') t.escalations = (t.escalations ?? 0) + 1;
      if (e.message && ['failed', 'timed_out'].includes(e.kind)) t.error = e.message;
      // Times for the live timeline: from the run's start, as the events stamp them.
      const at = Date.parse(e.at) - Date.parse(run.started_at);
      if (e.kind === 'started') { t.live_start = at; t.live_end = undefined; t.started_ms = at; t.duration_ms = 0; }
      else if (t.live_start !== undefined && ['succeeded', 'failed', 'timed_out', 'cancelled'].includes(e.kind)) { t.live_end = at; t.duration_ms = Math.max(0, at - t.live_start); }
      tasks.set(e.task, t);
      dirty = true;
    };
    for (const kind of ['released', 'routed', 'started', 'succeeded', 'failed', 'timed_out', 'cancelled', 'skipped', 'escalated', 'retried'])
      events.addEventListener(kind, apply);
    events.addEventListener('run_ended', async ev => {
      events.close();
      run = JSON.parse(ev.data);
      dirty = true;
      await settle();
    });
    events.addEventListener('overflow', async () => {
      // Too far behind: read the run as it stands (the stream is not subscribed again), and again once it ends.
      events.close();
      run = await get(`/api/runs/${encodeURIComponent(runId)}?wait=3600`);
      await settle();
    });
  }
  window.addEventListener('pagehide', () => clearInterval(timer), { once: true });
}

// A run's graph and timeline, drawn in SVG: the DAG in levels (each edge goes to a later level),
// nodes coloured by state, edges by kind, the critical path outlined; above a size, one bar per
// level with its tasks by state instead of a node each. The Gantt chart: a lane per layer slot.
import { el, svg, show, fmt } from './dom.js';

const NODES_DRAWN = 1500;       // more tasks than this: the graph is drawn by level
const W = 140, H = 20, GAP_X = 40, GAP_Y = 8;
const STATES = ['succeeded', 'failed', 'timed_out', 'cancelled', 'skipped', 'running', 'routed', 'ready', 'retrying', 'escalated', 'waiting'];

/** The state class of a task (a task the page has heard nothing of is waiting). */
const stateOf = t => (t?.status ?? 'waiting');

/**
 * Draws graph (GET /api/runs/{id}/graph) into container; returns update(tasks) that recolours it
 * from the page's tasks (id → {status, index, …}), cheap enough to call four times a second.
 */
export function drawGraph(container, graph, onClick) {
  const critical = new Set(graph.critical_path ?? []);
  if (graph.tasks && graph.tasks.length <= NODES_DRAWN) return drawNodes(container, graph, critical, onClick);
  return drawLevels(container, graph);
}

function drawNodes(container, graph, critical, onClick) {
  const tasks = graph.tasks;
  const preds = tasks.map(() => []);
  for (const [from, to] of graph.edges) preds[to].push(from);
  // Each level's tasks ordered by where their predecessors stand (fewer crossings).
  const byLevel = Array.from({ length: graph.levels }, () => []);
  tasks.forEach((t, i) => byLevel[t.level].push(i));
  const row = new Array(tasks.length).fill(0);
  for (const level of byLevel) {
    const key = i => preds[i].length === 0 ? row[i] : preds[i].reduce((a, p) => a + row[p], 0) / preds[i].length;
    level.sort((a, b) => key(a) - key(b) || a - b);
    level.forEach((i, k) => { row[i] = k; });
  }
  const tall = Math.max(1, ...byLevel.map(l => l.length));
  const width = graph.levels * (W + GAP_X) + 20, height = tall * (H + GAP_Y) + 20;
  const x = i => 10 + tasks[i].level * (W + GAP_X), y = i => 10 + row[i] * (H + GAP_Y);
  const edges = svg('g', { class: 'edges' });
  for (const [from, to, kind] of graph.edges) {
    const x1 = x(from) + W, y1 = y(from) + H / 2, x2 = x(to), y2 = y(to) + H / 2, mid = (x1 + x2) / 2;
    const onPath = critical.has(tasks[from].id) && critical.has(tasks[to].id);
    edges.append(svg('path', { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: `edge ${kind}${onPath ? ' crit' : ''}` }));
  }
  const nodes = svg('g', { class: 'nodes' });
  const elements = new Map();
  tasks.forEach((t, i) => {
    const label = t.id.length > 20 ? t.id.slice(0, 19) + '…' : t.id;
    const g = svg('g', { class: `node waiting${critical.has(t.id) ? ' crit' : ''}`, 'data-task': t.id, transform: `translate(${x(i)},${y(i)})` },
      svg('title', {}, `${t.id} (${t.handler})`), svg('rect', { width: W, height: H, rx: 3 }), svg('text', { x: 6, y: 14 }, label));
    g.addEventListener('click', () => onClick(t.id));
    nodes.append(g);
    elements.set(t.id, g);
  });
  const picture = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'dag', role: 'img', 'aria-label': 'the run\'s graph' }, edges, nodes);
  show(container, el('div', { class: 'legend' }, el('span', {}, el('i', { class: 'edge-key hard' }), 'hard'), el('span', {}, el('i', { class: 'edge-key soft' }), 'soft'),
    el('span', {}, el('i', { class: 'edge-key data' }), 'data'), el('span', {}, el('i', { class: 'edge-key crit' }), `critical path (${graph.critical_path_source === 'measured' ? 'measured' : 'estimated'})`)),
    el('div', { class: 'dag-frame' }, picture));
  const shown = new Map();
  return tasksById => {
    for (const [id, g] of elements) {
      const s = stateOf(tasksById.get(id));
      if (shown.get(id) === s) continue;
      shown.set(id, s);
      g.setAttribute('class', `node ${s}${critical.has(id) ? ' crit' : ''}`);
    }
  };
}

function drawLevels(container, graph) {
  const levelOf = graph.level_of ?? graph.tasks?.map(t => t.level) ?? null;
  const bars = el('div', { class: 'levels' });
  show(container, el('p', { class: 'muted' }, `${fmt.int(graph.tasks_total)} tasks in ${fmt.int(graph.levels)} levels: drawn by level, each bar its tasks by state.`), bars);
  let last = '';
  return tasksById => {
    const counts = Array.from({ length: graph.levels }, () => ({}));
    if (levelOf) for (const t of tasksById.values()) if (t.index !== undefined && t.index >= 0 && t.index < levelOf.length) {
      const c = counts[levelOf[t.index]]; const s = stateOf(t); c[s] = (c[s] ?? 0) + 1;
    }
    const key = JSON.stringify(counts);
    if (key === last) return;
    last = key;
    const width = 600, rowH = 14;
    const maxSize = Math.max(1, ...graph.level_sizes);
    const rows = Math.min(graph.levels, 400);
    const picture = svg('svg', { width: width + 160, height: rows * (rowH + 2) + 4, class: 'level-bars' });
    for (let l = 0; l < rows; l++) {
      const size = graph.level_sizes[l];
      picture.append(svg('text', { x: 0, y: l * (rowH + 2) + 11, class: 'axis' }, `level ${l} (${fmt.int(size)})`));
      let at = 150;
      const scale = width / maxSize;
      const seen = counts[l];
      const known = Object.values(seen).reduce((a, v) => a + v, 0);
      for (const s of STATES) {
        const n = s === 'waiting' ? (seen.waiting ?? 0) + Math.max(0, size - known) : seen[s] ?? 0;
        if (n === 0) continue;
        picture.append(svg('rect', { x: at, y: l * (rowH + 2), width: Math.max(1, n * scale), height: rowH, class: `bar ${s}` }, svg('title', {}, `level ${l}: ${fmt.int(n)} ${s}`)));
        at += n * scale;
      }
    }
    show(bars, picture, graph.levels > rows ? el('p', { class: 'muted' }, `the first ${rows} of ${fmt.int(graph.levels)} levels`) : null);
  };
}

/** The Gantt chart of the tasks that have a start and a duration: a lane per layer slot in use. */
export function drawGantt(container, tasks, critical, wallMs) {
  const MAX = 5000;
  const timed = [...tasks.values()].filter(t => t.started_ms !== undefined && t.duration_ms !== undefined).sort((a, b) => a.started_ms - b.started_ms);
  if (timed.length === 0) { show(container); return; }
  const drawn = timed.slice(0, MAX);
  const end = Math.max(1, wallMs ?? 0, ...drawn.map(t => t.started_ms + t.duration_ms));
  // Per layer, the first slot free when a task starts.
  const lanes = [];
  const placed = [];
  for (const layer of [...new Set(drawn.map(t => t.layer ?? '-'))].sort()) {
    const ends = [];
    const first = lanes.length;
    for (const t of drawn.filter(t => (t.layer ?? '-') === layer)) {
      let slot = ends.findIndex(e => e <= t.started_ms + 1e-6);
      if (slot < 0) { ends.push(0); slot = ends.length - 1; }
      ends[slot] = t.started_ms + t.duration_ms;
      placed.push([t, first + slot]);
    }
    for (let i = 0; i < ends.length; i++) lanes.push(`${layer} ${i + 1}`);
  }
  const width = 1000, left = 110, laneH = 14, top = 18;
  const scale = (width - left - 10) / end;
  const picture = svg('svg', { width, height: top + lanes.length * (laneH + 2) + 6, viewBox: `0 0 ${width} ${top + lanes.length * (laneH + 2) + 6}`, class: 'gantt' });
  picture.append(svg('text', { x: left, y: 12, class: 'axis' }, '0'), svg('text', { x: width - 10, y: 12, class: 'axis', 'text-anchor': 'end' }, fmt.ms(end)));
  lanes.forEach((name, i) => picture.append(svg('text', { x: 0, y: top + i * (laneH + 2) + 11, class: 'axis' }, name)));
  for (const [t, lane] of placed) {
    picture.append(svg('rect', { x: left + t.started_ms * scale, y: top + lane * (laneH + 2), width: Math.max(1, t.duration_ms * scale), height: laneH,
      class: `bar ${t.status}${critical.has(t.id) ? ' crit' : ''}`, 'data-task': t.id }, svg('title', {}, `${t.id}: ${fmt.ms(t.duration_ms)} from ${fmt.ms(t.started_ms)} on ${t.layer ?? '-'}`)));
  }
  show(container, el('div', { class: 'dag-frame' }, picture),
    timed.length > MAX ? el('p', { class: 'muted' }, `the first ${fmt.int(MAX)} of ${fmt.int(timed.length)} timed tasks`) : null);
}

// Submit and watch (/submit): a graph pasted or read from a file, validated by the service
// (every problem with its line and task id; nothing runs), then run and watched.
import { el, show } from './dom.js';
import { send, currentSession, allows } from './api.js';

// Examples to start from (built-in handlers only: every service runs them).
const examples = {
  'a small pipeline': {
    name: 'pipeline',
    tasks: [
      { id: 'fetch', handler: 'sleep', args: { millis: 200 } },
      { id: 'parse', handler: 'hash', args: { bytes: 100000 }, dependsOn: ['fetch'] },
      { id: 'check', handler: 'spin', args: { micros: 5000 }, dependsOn: ['fetch'] },
      { id: 'report', handler: 'noop', dependsOn: [{ id: 'parse', type: 'data' }, 'check'] },
    ],
  },
  'a fan-out and fan-in of 50 tasks': {
    name: 'fan-out',
    tasks: [{ id: 'start', handler: 'noop' },
      ...Array.from({ length: 50 }, (_, i) => ({ id: `work-${i}`, handler: 'sleep', args: { millis: 50 + 10 * (i % 7) }, dependsOn: ['start'] })),
      { id: 'gather', handler: 'noop', dependsOn: Array.from({ length: 50 }, (_, i) => `work-${i}`) }],
  },
  'a failure and what it skips': {
    name: 'failure',
    tasks: [
      { id: 'ok', handler: 'noop' },
      { id: 'breaks', handler: 'fail', args: { message: 'this task fails on purpose' }, dependsOn: ['ok'] },
      { id: 'after', handler: 'noop', dependsOn: ['breaks'] },
      { id: 'regardless', handler: 'noop', dependsOn: [{ id: 'breaks', type: 'soft' }] },
    ],
  },
};
const example = JSON.stringify(examples['a small pipeline'], null, 2);

export async function submit(main) {
  const s = await currentSession();
  if (s.read_only) {
    show(main, el('h1', {}, 'Submit a graph'), el('p', { class: 'muted' }, 'This dashboard browses a run store\'s history (taskmesh dashboard): submit through taskmesh serve.'));
    return;
  }
  if (!allows(s.role, 'operator')) {
    show(main, el('h1', {}, 'Submit a graph'), el('p', { class: 'error' }, `Your token's role (${s.role}) may read, not submit: submitting needs an operator token.`));
    return;
  }
  const text = el('textarea', { id: 'graph', rows: 18, spellcheck: 'false' });
  text.value = example;
  const pick = el('select', { id: 'example' }, Object.keys(examples).map(k => el('option', { value: k }, k)));
  pick.addEventListener('change', () => { text.value = JSON.stringify(examples[pick.value], null, 2); });
  const file = el('input', { type: 'file', id: 'graph-file', accept: '.json,application/json' });
  file.addEventListener('change', async () => { if (file.files?.[0]) text.value = await file.files[0].text(); });
  const errors = el('div', { id: 'submit-errors', role: 'alert' });
  const form = el('form', { id: 'submit', class: 'card' },
    el('div', { class: 'row' }, el('label', {}, 'Start from an example ', pick)),
    el('label', { for: 'graph' }, 'Graph JSON (docs/graph-format.md)'), text,
    el('div', { class: 'row' }, el('label', {}, 'or a file ', file), el('button', { type: 'submit', id: 'submit-button' }, 'Validate and run')),
    errors);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    show(errors);
    try {
      const r = await send('POST', '/api/runs', text.value);
      location.assign(`/runs/${encodeURIComponent(r.run_id)}`);
    } catch (e) {
      const list = e.problem?.errors ?? [];
      show(errors, el('p', { class: 'error' }, e.message), list.length === 0 ? null : el('table', { class: 'grid', id: 'graph-errors' },
        el('thead', {}, el('tr', {}, ['line', 'task', 'problem'].map(h => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, list.map(x => el('tr', {}, el('td', { class: 'num' }, x.line ?? ''), el('td', {}, x.task_id ?? x.task ?? ''), el('td', {}, x.message ?? x.code ?? ''))))));
    }
  });
  show(main, el('h1', {}, 'Submit a graph'), form);
}

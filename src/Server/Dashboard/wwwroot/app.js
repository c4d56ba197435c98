// The dashboard's one page: the path says what to draw.
import { el, show } from './dom.js';
import { currentSession, signOut } from './api.js';
import { overview } from './overview.js';
import { runView } from './run.js';
import { submit } from './submit.js';
import { signin } from './signin.js';

async function main() {
  const main = document.getElementById('main');
  const path = location.pathname;
  try {
    if (path === '/signin') { signin(main); return; }
    const s = await currentSession();
    show(document.getElementById('who'), s.tokens_required
      ? [`${s.subject} (${s.role}) `, el('button', { type: 'button', id: 'signout', onclick: async () => { await signOut(); location.assign('/signin'); } }, 'Sign out')]
      : 'no tokens required');
    const run = /^\/runs\/([^/]+)$/.exec(path);
    if (run) await runView(main, decodeURIComponent(run[1]));
    else if (path === '/submit') await submit(main);
    else await overview(main);
  } catch (e) {
    show(main, el('h1', {}, 'Something went wrong'), el('p', { class: 'error' }, e.message));
  }
}

main();

// Signing in (/signin): a token, checked by the service and kept in an HttpOnly cookie.
import { el, show } from './dom.js';
import { signIn } from './api.js';

export function signin(main) {
  const token = el('textarea', { id: 'token', name: 'token', rows: 4, required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'a token from taskmesh token create' });
  const error = el('p', { id: 'signin-error', class: 'error', role: 'alert' });
  const form = el('form', { id: 'signin', class: 'card' },
    el('label', { for: 'token' }, 'Token'), token, error,
    el('button', { type: 'submit', id: 'signin-button' }, 'Sign in'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    show(error);
    try {
      await signIn(token.value.trim());
      const next = new URLSearchParams(location.search).get('next');
      // Only a path of this site, never another origin ('//host' and '/\\host' name one).
      location.assign(next && /^\/(?![\/\\])/.test(next) ? next : '/');
    } catch (e) {
      show(error, e.message);
    }
  });
  show(main, el('h1', {}, 'Sign in'), el('p', { class: 'muted' }, 'The service requires a token: a viewer reads; an operator may also submit, cancel and escalate; an admin changes rules and trains.'), form);
}

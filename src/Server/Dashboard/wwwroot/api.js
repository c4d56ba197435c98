// The service's HTTP API, as the pages use it: the session cookie carries the token; a change
// carries the anti-forgery token the session gives.

let session = null;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? problem?.title ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem ?? {};
  }
}

async function read(response) {
  const type = response.headers.get('content-type') ?? '';
  const body = type.includes('json') ? await response.json() : null;
  if (response.status === 401 && location.pathname !== '/signin') {
    location.assign('/signin?next=' + encodeURIComponent(location.pathname + location.search));
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Who is signed in: {tokens_required, subject, role, csrf}. */
export async function currentSession() {
  if (!session) session = await read(await fetch('/api/session', { credentials: 'same-origin' }));
  return session;
}

export async function get(path) {
  return read(await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } }));
}

/** A change (POST, PUT, DELETE) with a JSON body (or text sent as it is). */
export async function send(method, path, body) {
  const s = await currentSession();
  const headers = { 'Content-Type': 'application/json', 'X-TaskMesh-CSRF': s.csrf ?? '' };
  return read(await fetch(path, { method, credentials: 'same-origin', headers, body: typeof body === 'string' ? body : JSON.stringify(body) }));
}

export async function signIn(token) {
  session = null;
  return read(await fetch('/api/session', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) }));
}

export async function signOut() {
  const s = await currentSession().catch(() => null);
  await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'X-TaskMesh-CSRF': s?.csrf ?? '' } });
  session = null;
}

/** Whether the signed-in role allows what needs role (viewer < operator < admin). */
export function allows(role, needed) {
  const order = ['viewer', 'operator', 'admin'];
  return order.indexOf(role) >= order.indexOf(needed) && order.indexOf(needed) >= 0;
}

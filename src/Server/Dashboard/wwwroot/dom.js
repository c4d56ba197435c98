// Building the document. Everything a graph or task contains goes in as text (textContent,
// attribute values): never as HTML. There is no innerHTML anywhere in the dashboard.

const SVG = 'http://www.w3.org/2000/svg';

/** An element: el('td', {class: 'num', title: 'x'}, 'text', child, ...). Strings become text nodes. */
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  return fill(e, attrs, children);
}

/** An SVG element, as el. */
export function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  return fill(e, attrs, children);
}

function fill(e, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces what node holds. */
export function show(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter(c => c !== undefined && c !== null && c !== false)
    .map(c => c instanceof Node ? c : document.createTextNode(String(c))));
}

export const fmt = {
  int: n => (n ?? 0).toLocaleString('en-US'),
  pct: x => x === null || x === undefined || Number.isNaN(x) ? '–' : (100 * x).toFixed(1) + ' %',
  ms: x => x === null || x === undefined || Number.isNaN(x) ? '–' : x < 1000 ? x.toFixed(x < 10 ? 2 : 1) + ' ms' : (x / 1000).toFixed(2) + ' s',
  cost: x => (x ?? 0).toFixed(4),
  conf: x => x === null || x === undefined || Number.isNaN(x) ? '–' : x.toFixed(3),
  time: s => s ? new Date(s).toLocaleString('en-GB', { hour12: false }) : '–',
};

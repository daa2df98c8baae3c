// api.js: the blendrag HTTP API as the page uses it. Paths are relative so
// the page also works behind a reverse proxy that mounts it under a prefix.

const keyName = 'blendrag.apiKey';

/** The API key kept in localStorage ('' when none). */
export function apiKey() {
  try { return localStorage.getItem(keyName) || ''; } catch { return ''; }
}

/** Stores (or, when empty, forgets) the API key. */
export function setAPIKey(key) {
  try {
    if (key) localStorage.setItem(keyName, key); else localStorage.removeItem(keyName);
  } catch { /* storage disabled: the key lasts for this page only */ }
}

function authHeaders(h = {}) {
  const k = apiKey();
  if (k) h.Authorization = 'Bearer ' + k;
  return h;
}

/** APIError carries an HTTP problem (RFC 9457) in readable form. */
export class APIError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

/** problem turns an error response's status and body into an APIError. */
export function problem(status, statusText, body) {
  let title = statusText || `HTTP ${status}`;
  let detail = '';
  try {
    const p = JSON.parse(body);
    if (p && typeof p === 'object') {
      title = p.title || p.message || title;
      detail = p.detail || (typeof p.error === 'string' ? p.error : '');
    }
  } catch {
    detail = (body || '').trim().slice(0, 300);
  }
  if (status === 401 && !apiKey()) detail = (detail ? detail + ' ' : '') + '(set an API key under Settings)';
  return new APIError(status, `${title} (${status})`, detail);
}

async function checked(res) {
  if (res.ok) return res;
  throw problem(res.status, res.statusText, await res.text());
}

/** json fetches path and decodes the JSON reply; errors become APIError. */
export async function json(path, { method = 'GET', body, signal } = {}) {
  const headers = authHeaders({ Accept: 'application/json' });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await checked(await fetch(path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  }));
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/**
 * upload posts one file as multipart field "files", reporting the fraction
 * sent to onProgress; it resolves to the 202 reply ({documents, job}).
 */
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', 'v1/documents');
    for (const [k, v] of Object.entries(authHeaders({ Accept: 'application/json' }))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(problem(xhr.status, xhr.statusText, xhr.responseText));
        return;
      }
      try { resolve(JSON.parse(xhr.responseText || '{}')); } catch (e) { reject(new Error('upload: bad reply: ' + e.message)); }
    };
    xhr.onerror = () => reject(new Error('upload: network error'));
    xhr.onabort = () => reject(new Error('upload: aborted'));
    const fd = new FormData();
    fd.append('files', file, file.name);
    xhr.send(fd);
  });
}

/**
 * sseEvents yields {event, data} for each Server-Sent Event in a response
 * body (the text/event-stream format: "event:" and "data:" lines, events
 * separated by a blank line; CR, LF and CRLF line ends).
 */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let event = '';
  let data = [];
  const line = (l) => {
    if (l === '') {
      if (data.length) return { event: event || 'message', data: data.join('\n') };
      event = '';
      return null;
    }
    if (l.startsWith(':')) return null;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      // A CR at the very end may be the first half of a CRLF: keep it.
      const end = buf.endsWith('\r') ? buf.length - 1 : buf.length;
      const lines = buf.slice(0, end).split(/\r\n|\r|\n/);
      buf = lines.pop() + buf.slice(end);
      for (const l of lines) {
        const ev = line(l);
        if (ev) {
          event = '';
          data = [];
          yield ev;
        }
      }
    }
    // An event not ended by a blank line is incomplete: dropped, as the
    // EventSource specification says.
  } finally {
    reader.releaseLock();
  }
}

/** The text of a token event's data: a JSON string or an object with the delta. */
export function tokenText(data) {
  let v;
  try { v = JSON.parse(data); } catch { return data; }
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    for (const k of ['text', 'delta', 'token', 'content']) if (typeof v[k] === 'string') return v[k];
  }
  return '';
}

/**
 * query posts a question with stream=true and calls handlers as events
 * arrive: onToken(text), onCitations(list), onTimings(t), onDone(data).
 * A server that answers plain JSON instead is handled too. SSE error
 * events reject with an APIError.
 */
export async function query(req, handlers, signal) {
  const res = await checked(await fetch('v1/query', {
    method: 'POST',
    headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
    body: JSON.stringify({ ...req, stream: true }),
    signal,
  }));
  const type = res.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream')) {
    const a = await res.json();
    handlers.onToken(a.answer || '');
    handlers.onCitations(a.citations || []);
    handlers.onTimings(a.timings || {});
    handlers.onDone(a);
    return;
  }
  let finished = false;
  for await (const ev of sseEvents(res.body)) {
    const parse = () => { try { return JSON.parse(ev.data); } catch { return {}; } };
    switch (ev.event) {
      case 'token': handlers.onToken(tokenText(ev.data)); break;
      case 'citations': { const c = parse(); handlers.onCitations(Array.isArray(c) ? c : c.citations || []); break; }
      case 'timings': { const t = parse(); handlers.onTimings(t.timings || t); break; }
      case 'done': finished = true; handlers.onDone(parse()); break;
      case 'error': {
        const p = parse();
        throw new APIError(p.status || 500, p.title || 'Answer failed', p.detail || (typeof p.error === 'string' ? p.error : ev.data));
      }
      default: break;
    }
  }
  if (!finished) throw new Error('the answer stream ended early');
}

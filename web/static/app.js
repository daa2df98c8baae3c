// app.js: the page's behaviour — uploads, the document list, questions and
// their streamed answers, citations and timings.
import * as api from './api.js';

const $ = (sel, root = document) => root.querySelector(sel);

/** el makes an element with properties and children. */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function showError(node, err) {
  if (!err) { node.hidden = true; node.textContent = ''; return; }
  node.textContent = err.message || String(err);
  node.hidden = false;
}

const modeNames = { full: 'Full prefill', cacheblend: 'CacheBlend', ape: 'APE', prefix: 'Prefix cache', reuse: 'Full reuse' };

function fmtBytes(n) {
  if (!(n >= 0)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function fmtNs(ns) {
  const ms = (ns || 0) / 1e6;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${Math.round(ms)} ms`;
  return `${ms.toFixed(1)} ms`;
}

// ---- Settings -------------------------------------------------------------

function initSettings() {
  const input = $('#api-key');
  input.value = api.apiKey();
  input.addEventListener('change', () => { api.setAPIKey(input.value.trim()); loadDocs(); });
}

// ---- Documents ------------------------------------------------------------

const pageSize = 20;
let docOffset = 0;

async function loadDocs() {
  const err = $('#docs-error');
  try {
    const r = await api.json(`v1/documents?offset=${docOffset}&limit=${pageSize}`);
    const docs = Array.isArray(r) ? r : (r.documents || r.items || []);
    const total = Array.isArray(r) ? docs.length : (r.total ?? docs.length);
    if (docs.length === 0 && docOffset > 0 && total > 0) {
      docOffset = Math.max(0, docOffset - pageSize);
      return loadDocs();
    }
    renderDocs(docs, total);
    showError(err, null);
  } catch (e) {
    showError(err, e);
  }
}

function renderDocs(docs, total) {
  const list = $('#doc-list');
  list.replaceChildren(...docs.map((d) => {
    const title = d.title || d.file_name || d.id;
    const meta = [d.kind, fmtBytes(d.size), d.pages ? plural(d.pages, 'page') : '', plural(d.chunks || 0, 'chunk')].filter(Boolean).join(' · ');
    return el('li', { class: 'doc', dataset: { id: d.id } },
      el('div', { class: 'doc-main' },
        el('span', { class: 'doc-title', title: d.id }, title),
        el('span', { class: 'meta' }, meta)),
      el('button', {
        type: 'button', class: 'danger', textContent: 'Delete',
        'aria-label': `Delete ${title}`,
        onclick: (e) => deleteDoc(d.id, e.currentTarget),
      }));
  }));
  if (docs.length === 0) list.append(el('li', { class: 'empty' }, 'No documents yet: add some above.'));
  const from = total ? docOffset + 1 : 0;
  $('#docs-count').textContent = `${from}–${docOffset + docs.length} of ${total}`;
  $('#docs-prev').disabled = docOffset === 0;
  $('#docs-next').disabled = docOffset + docs.length >= total;
}

async function deleteDoc(id, button) {
  button.disabled = true;
  try {
    await api.json(`v1/documents/${encodeURIComponent(id)}`, { method: 'DELETE' });
    await loadDocs();
  } catch (e) {
    showError($('#docs-error'), e);
    button.disabled = false;
  }
}

// ---- Uploads --------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** jobFraction reads a job's progress as a fraction in [0, 1], or null. */
function jobFraction(p) {
  if (typeof p === 'number') return p > 1 ? p / 100 : p;
  if (p && typeof p === 'object' && p.total > 0) return p.done / p.total;
  return null;
}

/** jobErrors lists a job's errors: the job's own and each file's. */
function jobErrors(j) {
  const out = [];
  const add = (e) => {
    if (!e) return;
    if (typeof e === 'string') out.push(e);
    else if (Array.isArray(e)) e.forEach(add);
    else if (typeof e === 'object') out.push([e.file || e.name, e.error || e.detail || e.message].filter(Boolean).join(': '));
  };
  add(j.error);
  add(j.errors);
  for (const f of j.files || []) if (f.error) out.push(`${f.name}: ${f.error}`);
  return out;
}

/** jobStage names what a running job is doing, from its first file's stage. */
function jobStage(j) {
  const f = (j.files || []).find((x) => x.state === 'running') || (j.files || [])[0];
  if (f && f.stage) return f.total > 0 ? `${f.stage} ${f.done}/${f.total}` : f.stage;
  return j.state || 'running';
}

class UploadItem {
  constructor(file) {
    this.bar = el('progress', { max: 1, value: 0, 'aria-label': `Progress of ${file.name}` });
    this.status = el('span', { class: 'status' }, 'waiting');
    this.node = el('li', { class: 'upload', dataset: { state: 'waiting' } },
      el('span', { class: 'name' }, file.name), this.bar, this.status);
  }

  set(state, text, fraction) {
    this.node.dataset.state = state;
    this.status.textContent = text;
    if (fraction == null) this.bar.removeAttribute('value');
    else this.bar.value = Math.min(1, Math.max(0, fraction));
  }
}

async function uploadOne(file, item) {
  try {
    item.set('uploading', 'uploading 0%', 0);
    const r = await api.upload(file, (f) => item.set('uploading', `uploading ${Math.round(f * 100)}%`, f));
    // The reply names the job by id, or holds the job itself.
    const jobID = typeof r.job === 'string' ? r.job : r.job && r.job.id;
    if (!jobID) { item.set('done', 'stored', 1); return; }
    for (let delay = 250; ; delay = Math.min(delay * 1.5, 2000)) {
      const j = await api.json(`v1/jobs/${encodeURIComponent(jobID)}`);
      const errs = jobErrors(j);
      if (j.state === 'done' || j.state === 'failed') {
        if (j.state === 'failed' || errs.length) item.set('failed', errs.join('; ') || 'ingest failed', 1);
        else item.set('done', (j.files || []).some((f) => f.existing) ? 'already stored' : 'ingested', 1);
        return;
      }
      const f = jobFraction(j.progress);
      item.set(j.state || 'running', j.state === 'queued' ? 'queued' : jobStage(j), f);
      await sleep(delay);
    }
  } catch (e) {
    item.set('failed', e.message, 0);
  }
}

let uploadQueue = Promise.resolve();

/** addFiles uploads files one after another, each with its own progress row. */
function addFiles(files) {
  for (const file of files) {
    const item = new UploadItem(file);
    $('#uploads').prepend(item.node);
    // One at a time: the server ingests serially anyway, and per-file
    // requests give honest per-file progress.
    uploadQueue = uploadQueue.then(() => uploadOne(file, item)).then(loadDocs);
  }
}

function initUploads() {
  const drop = $('#drop');
  const input = $('#file-input');
  input.addEventListener('change', () => { addFiles([...input.files]); input.value = ''; });
  for (const t of ['dragenter', 'dragover']) {
    drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add('over'); });
  }
  for (const t of ['dragleave', 'drop']) {
    drop.addEventListener(t, () => drop.classList.remove('over'));
  }
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) addFiles([...e.dataTransfer.files]);
  });
  // A file dropped elsewhere must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
  $('#docs-prev').addEventListener('click', () => { docOffset = Math.max(0, docOffset - pageSize); loadDocs(); });
  $('#docs-next').addEventListener('click', () => { docOffset += pageSize; loadDocs(); });
}

// ---- Answers --------------------------------------------------------------

const timingParts = [
  { key: 'retrieve', label: 'retrieve' },
  { key: 'load', label: 'load KV' },
  { key: 'recompute', label: 'recompute' },
  { key: 'first', label: 'first token' },
  { key: 'decode', label: 'decode' },
];

/** timingSpans splits a Timings object into the bar's five parts (ns). */
function timingSpans(t) {
  const retrieve = t.retrieve_ns || 0;
  const load = t.kv_load_ns || 0;
  const recompute = t.recompute_ns || 0;
  // first_token_ns runs from the request to the first token: what it has
  // beyond the three parts above is the rest of the prefill.
  const first = Math.max(0, (t.first_token_ns || 0) - retrieve - load - recompute);
  return { retrieve, load, recompute, first, decode: t.decode_ns || 0 };
}

class Pane {
  constructor(label) {
    this.node = $('#pane-tpl').content.firstElementChild.cloneNode(true);
    $('.pane-mode', this.node).textContent = label;
    this.text = $('.answer-text', this.node);
    this.status = $('.pane-status', this.node);
    this.error = $('.error', this.node);
    this.chips = $('.chips', this.node);
    this.timing = $('.timing', this.node);
  }

  state(s, text) { this.node.dataset.state = s; this.status.textContent = text; }

  citations(list) {
    this.chips.replaceChildren(...list.map((c, i) => {
      const n = c.index || i + 1;
      const chunk = c.chunk || {};
      const title = c.title || chunk.doc || 'source';
      const label = `[${n}] ${title}${chunk.page ? ` · p. ${chunk.page}` : ''}`;
      return el('button', {
        type: 'button', class: 'chip', textContent: label, title: `Open passage ${n}`,
        onclick: () => openPassage(n, c),
      });
    }));
  }

  timings(t) {
    const spans = timingSpans(t);
    const total = timingParts.reduce((s, p) => s + spans[p.key], 0);
    const bar = $('.bar', this.timing);
    bar.setAttribute('aria-label', timingParts.map((p) => `${p.label} ${fmtNs(spans[p.key])}`).join(', '));
    bar.replaceChildren(...timingParts.filter((p) => spans[p.key] > 0).map((p) => el('span', {
      class: `seg seg-${p.key}`, title: `${p.label}: ${fmtNs(spans[p.key])}`,
      style: `flex-grow: ${spans[p.key] / (total || 1)}`,
    })));
    $('.legend', this.timing).replaceChildren(...timingParts.map((p) => el('li', {},
      el('span', { class: `swatch seg-${p.key}`, 'aria-hidden': 'true' }), `${p.label} ${fmtNs(spans[p.key])}`)));
    const totals = [`first token after ${fmtNs(t.first_token_ns)}`];
    if (t.tokens) totals.push(`${t.tokens} tokens`);
    if (t.decode_tok_s) totals.push(`${t.decode_tok_s.toFixed(1)} tok/s`);
    if (t.kv_missing) totals.push(`KV of ${plural(t.kv_missing, 'chunk')} computed now`);
    if (t.kv_hot) totals.push(`KV of ${plural(t.kv_hot, 'chunk')} from host RAM`);
    if (t.kv_device) totals.push(`KV of ${plural(t.kv_device, 'chunk')} from GPU memory`);
    const r = t.rapid;
    if (r) {
      totals.push(r.off && !r.rounds
        ? `RAPID off${r.off_reason ? ` (${r.off_reason})` : ''}`
        : `RAPID: ${r.accepted}/${r.drafted} drafts accepted (${Math.round((r.accept_rate || 0) * 100)}%), γ ≈ ${(r.gamma_mean || 0).toFixed(1)}${r.off ? ', then off' : ''}`);
    }
    $('.totals', this.timing).textContent = totals.join(' · ');
    this.timing.hidden = false;
  }
}

function openPassage(n, c) {
  const chunk = c.chunk || {};
  $('#passage-title').textContent = `[${n}] ${c.title || chunk.doc || ''}`;
  const meta = [];
  if (chunk.page) meta.push(`page ${chunk.page}`);
  if (chunk.end > chunk.start) meta.push(`bytes ${chunk.start}–${chunk.end}`);
  if (chunk.doc) meta.push(`document ${chunk.doc.slice(0, 12)}`);
  if (typeof c.score === 'number') meta.push(`score ${c.score.toFixed(4)}`);
  $('#passage-meta').textContent = meta.join(' · ');
  $('#passage-text').textContent = chunk.text || '';
  $('#passage').showModal();
}

let running = null; // the AbortController of the question being answered

function readRequest(mode) {
  const f = $('#ask-form');
  const num = (id) => Number($(id, f).value);
  const req = {
    question: $('#question').value.trim(),
    mode,
    k: num('#k') || undefined,
    max_tokens: num('#max-tokens') || undefined,
    temperature: num('#temperature') || 0,
    rerank: $('#rerank').checked,
  };
  if (num('#ratio') > 0) req.ratio = num('#ratio');
  if ($('#rapid').checked) req.rapid = true;
  return req;
}

async function answer(pane, req, signal) {
  pane.state('streaming', 'answering…');
  const started = performance.now();
  let text = '';
  try {
    await api.query(req, {
      onToken: (d) => { text += d; pane.text.textContent = text; },
      onCitations: (c) => pane.citations(c),
      onTimings: (t) => pane.timings(t),
      onDone: (d) => {
        if (d && typeof d.answer === 'string' && d.answer && !text) pane.text.textContent = d.answer;
        const stop = d && d.stop ? ` (${d.stop})` : '';
        pane.state('done', `done in ${((performance.now() - started) / 1000).toFixed(1)} s${stop}`);
      },
    }, signal);
  } catch (e) {
    if (e.name === 'AbortError') { pane.state('stopped', 'stopped'); return; }
    pane.state('failed', 'failed');
    showError(pane.error, e);
  }
}

/** ask answers the question in each mode, one after another. */
async function ask(modes) {
  const q = $('#question').value.trim();
  if (!q) { $('#question').focus(); return; }
  if (running) running.abort();
  const ctl = new AbortController();
  running = ctl;
  showError($('#ask-error'), null);
  const rapid = $('#rapid').checked ? ' + RAPID' : '';
  const panes = modes.map((m) => new Pane((modeNames[m] || m) + rapid));
  const box = $('#answers');
  box.replaceChildren(...panes.map((p) => p.node));
  box.classList.toggle('compare', panes.length > 1);
  panes.slice(1).forEach((p) => p.state('waiting', 'waiting…'));
  setBusy(true);
  try {
    // One after another, so that each answer's timings are its own.
    for (let i = 0; i < modes.length && !ctl.signal.aborted; i++) {
      await answer(panes[i], readRequest(modes[i]), ctl.signal);
    }
  } finally {
    if (running === ctl) { running = null; setBusy(false); }
  }
}

function setBusy(busy) {
  $('#stop-btn').disabled = !busy;
  $('#answers').setAttribute('aria-busy', String(busy));
}

function initAsk() {
  const form = $('#ask-form');
  form.addEventListener('submit', (e) => { e.preventDefault(); ask([$('#mode').value]); });
  $('#question').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  $('#compare-btn').addEventListener('click', () => {
    const a = $('#mode').value;
    let b = $('#mode-b').value;
    if (b === a) b = a === 'full' ? 'cacheblend' : 'full';
    ask([a, b]);
  });
  $('#stop-btn').addEventListener('click', () => { if (running) running.abort(); });
}

initSettings();
initUploads();
initAsk();
loadDocs();

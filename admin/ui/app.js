// junction's dashboard (docs/dashboard.md): one ES module, no framework, built on the admin
// JSON API (docs/admin-api.md) and nothing else. Every value that comes from the broker or a
// message is put into the page as text (textContent, text nodes), never as HTML.

const TOKEN_KEY = 'junction.admin_token';
const POLL_MS = 2000;
const HISTORY_MS = 10 * 60 * 1000;

// ---- small DOM helpers ----

const $ = (sel, root = document) => root.querySelector(sel);

// el('td', {cls: 'num', title: 'x'}, 'text', child): children that are strings become text nodes.
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'cls') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function showError(msg) {
  const e = $('#error');
  e.textContent = msg || '';
  e.hidden = !msg;
}

const fmtInt = (n) => (n === undefined || n === null ? '' : Number(n).toLocaleString('en'));
const fmtRate = (r) => (r === undefined || r === null || !isFinite(r) ? '–' : r < 10 ? r.toFixed(1) : r.toFixed(0));

function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + u[i];
}

function fmtAge(s) {
  if (!s) return '';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

// ---- the API, with the token ----

class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

let tokenAsking = null; // one dialog for every request that met a 401 meanwhile

function askToken(why) {
  if (tokenAsking) return tokenAsking;
  tokenAsking = new Promise((resolve) => {
    const d = $('#token-dialog');
    const form = $('#token-form');
    const input = $('#token-input');
    $('#token-why').textContent = why;
    input.value = '';
    const done = (ev) => {
      ev.preventDefault();
      if (!input.value) return;
      sessionStorage.setItem(TOKEN_KEY, input.value);
      form.removeEventListener('submit', done);
      d.close();
      tokenAsking = null;
      resolve();
    };
    form.addEventListener('submit', done);
    d.showModal();
    input.focus();
  });
  return tokenAsking;
}

// api('/api/v1/status') → the JSON answer; {method, body} for a POST; {raw: true} → the Response.
async function api(path, { method = 'GET', body, raw = false } = {}) {
  for (;;) {
    const headers = {};
    const tok = sessionStorage.getItem(TOKEN_KEY);
    if (tok) headers.Authorization = 'Bearer ' + tok;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, {
      method, headers, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) {
      await askToken(tok ? 'The admin API refused that token; enter it again.'
        : "This junction's admin API needs its token (junction.admin_token). It is kept for this tab only.");
      continue;
    }
    if (raw) {
      if (!r.ok) throw new ApiError(r.status, (await r.text()) || r.statusText);
      return r;
    }
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (!r.ok) throw new ApiError(r.status, (j && j.error) || r.status + ' ' + r.statusText);
    return j;
  }
}

// ---- overview: polled every 2 s; rates from two polls; 10 minutes of history in the page ----

const ov = {
  prev: null,       // {t, ch: {name: {in, out}}, routes: {name: routed}}
  history: [],      // [{t, in, out}] per second, totals of all channels
  rows: new Map(),  // channel name → {tr, cells}
  routeRows: new Map(),
  channels: [],
  routes: [],
};

function channelRow(c) {
  let r = ov.rows.get(c.name);
  if (r) return r;
  const cells = {};
  const td = (key, cls) => (cells[key] = el('td', { cls }));
  const btn = el('button', { type: 'button', cls: 'pause', data: { channel: c.name } });
  btn.addEventListener('click', () => togglePause(c.name, btn));
  const tr = el('tr', { data: { channel: c.name } },
    td('name', 'name'), td('type'), td('dir'), td('state', 'state'), td('in', 'num in'),
    td('out', 'num out'), td('rate', 'num rate'), td('queued', 'num queued'),
    td('oldest', 'num oldest'), td('other', 'num'), td('dead', 'num dead'),
    el('td', {}, btn));
  cells.btn = btn;
  r = { tr, cells };
  ov.rows.set(c.name, r);
  $('#channels tbody').append(tr);
  return r;
}

async function togglePause(name, btn) {
  const action = btn.dataset.action;
  btn.disabled = true;
  try {
    await api('/api/v1/channels/' + encodeURIComponent(name) + '/' + action, { method: 'POST' });
    showError('');
    await pollOnce();
  } catch (e) {
    showError(action + ' ' + name + ': ' + e.message);
  } finally {
    btn.disabled = false;
  }
}

function renderChannels(channels, queues, now) {
  const q = new Map(queues.map((x) => [x.channel, x]));
  const dt = ov.prev ? (now - ov.prev.t) / 1000 : 0;
  let tin = 0;
  let tout = 0;
  for (const c of channels) {
    const { cells } = channelRow(c);
    const inN = c.direction === 'in' ? c.received : undefined;
    const outN = c.direction === 'out' ? c.delivered : undefined;
    const p = ov.prev && ov.prev.ch[c.name];
    let rate = null;
    if (p && dt > 0) {
      rate = Math.max(0, ((c.direction === 'in' ? inN - p.in : outN - p.out) || 0) / dt);
      if (c.direction === 'in') tin += rate; else tout += rate;
    }
    cells.name.textContent = c.name;
    cells.type.textContent = c.type;
    cells.dir.textContent = c.direction === 'in' ? 'IN' : 'OUT';
    cells.state.textContent = '';
    const word = document.createElement('span');
    word.className = 'state-word';
    word.textContent = c.state;
    cells.state.appendChild(word);
    cells.state.className = 'state state-' + c.state;
    if (c.blocked) cells.state.title = c.blocked; else cells.state.removeAttribute('title');
    if (c.last_error) {
      // The latest failure on the channel, with its time: as text, never as HTML.
      const e = document.createElement('div');
      e.className = 'last-error';
      e.textContent = c.last_error.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z') + ' ' +
        c.last_error.error;
      cells.state.appendChild(e);
    }
    cells.in.textContent = fmtInt(inN);
    cells.out.textContent = fmtInt(outN);
    cells.rate.textContent = fmtRate(rate);
    const qq = q.get(c.name);
    cells.queued.textContent = c.direction === 'out' ? fmtInt(qq ? qq.queued : c.queued) : '';
    cells.oldest.textContent = qq ? fmtAge(qq.oldest_seconds) : '';
    cells.other.textContent = c.direction === 'in' ? fmtInt(c.refused) : fmtInt(c.retried);
    cells.other.title = c.direction === 'in' ? 'refused' : 'retried';
    cells.dead.textContent = c.direction === 'out' ? fmtInt(c.failed) : '';
    const paused = c.state === 'paused';
    cells.btn.dataset.action = paused ? 'resume' : 'pause';
    cells.btn.textContent = paused ? 'Resume' : 'Pause';
    cells.btn.setAttribute('aria-label', (paused ? 'Resume ' : 'Pause ') + c.name);
  }
  for (const [name, r] of ov.rows) {
    if (!channels.some((c) => c.name === name)) { r.tr.remove(); ov.rows.delete(name); }
  }
  if (ov.prev && dt > 0) {
    ov.history.push({ t: now, in: tin, out: tout });
    while (ov.history.length && ov.history[0].t < now - HISTORY_MS) ov.history.shift();
  }
}

function renderRoutes(routes, now) {
  const dt = ov.prev ? (now - ov.prev.t) / 1000 : 0;
  for (const rt of routes) {
    let r = ov.routeRows.get(rt.name);
    if (!r) {
      r = { name: el('td'), routed: el('td', { cls: 'num' }), rate: el('td', { cls: 'num' }) };
      r.tr = el('tr', { data: { route: rt.name } }, r.name, r.routed, r.rate);
      ov.routeRows.set(rt.name, r);
      $('#routes tbody').append(r.tr);
    }
    const p = ov.prev && ov.prev.routes[rt.name];
    r.name.textContent = rt.name;
    r.routed.textContent = fmtInt(rt.routed);
    r.rate.textContent = fmtRate(p !== undefined && dt > 0 ? Math.max(0, (rt.routed - p) / dt) : null);
  }
}

function meter(label, value, max, text) {
  const pr = el('progress', { max: String(max || 1), value: String(Math.min(value || 0, max || 1)) });
  return el('div', { cls: 'meter' }, el('span', { cls: 'meter-label', text: label }), pr,
    el('span', { cls: 'meter-text', text }));
}

function renderStatus(s) {
  const sum = $('#summary');
  const item = (k, v, cls) => el('div', { cls: 'stat ' + (cls || '') }, el('span', { cls: 'k', text: k }),
    el('span', { cls: 'v', text: v }));
  sum.replaceChildren(
    item('version', s.version),
    item('ready', s.ready ? 'ready' : s.stopping ? 'stopping' : 'not ready', s.ready ? 'ok' : 'bad'),
    item('uptime', fmtAge(s.uptime_seconds) || '0 s'),
    item('channels', fmtInt(s.channels)),
    item('routes', fmtInt(s.routes)),
    item('dead letters', fmtInt(s.journal.dead_letters), s.journal.dead_letters ? 'bad' : ''),
    item('routing', fmtInt(s.routing_in_flight)),
    item('config', s.config_hash));
  const j = s.journal;
  const r = s.retention || {};
  const used = (r.kept_bytes || 0) + (r.action_log_bytes || 0);
  $('#journal').replaceChildren(
    meter('journal', j.bytes, j.map_bytes, fmtBytes(j.bytes) + ' of ' + fmtBytes(j.map_bytes) +
      ' (' + j.used_pct + ' %)'),
    meter('retention', used, r.budget_bytes, fmtBytes(used) + ' of ' + fmtBytes(r.budget_bytes) +
      ' budget: ' + fmtInt(r.kept) + ' kept messages (' + fmtBytes(r.kept_bytes) + '), action log ' +
      fmtBytes(r.action_log_bytes) + '; deleted ' + fmtInt(r.deleted_messages) + ' messages, ' +
      fmtInt(r.deleted_actions) + ' actions'),
    el('p', { text: 'queued ' + fmtInt(j.queued) + ' · inbox ' + fmtInt(j.inbox) +
      (s.flow && s.flow.disk_low ? ' · disk low: intake held' : '') }));
}

function drawChart() {
  const cv = $('#chart');
  if (!cv || cv.offsetParent === null) return;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, cv.clientWidth);
  const h = cv.clientHeight || 140;
  if (cv.width !== Math.round(w * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
  const g = cv.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now();
  const max = Math.max(1, ...ov.history.map((p) => Math.max(p.in, p.out)));
  g.strokeStyle = '#d0d4da';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = 4 + ((h - 8) * i) / 4;
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
  }
  const x = (t) => w - ((now - t) / HISTORY_MS) * w;
  const y = (v) => h - 4 - (v / max) * (h - 8);
  for (const [key, color] of [['in', '#1f6feb'], ['out', '#2da44e']]) {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    ov.history.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
    g.stroke();
  }
  $('#chart-max').textContent = 'top of the chart: ' + fmtRate(max) + ' /s';
}

// Fills the channel and route selects of the filter forms (keeping what is chosen).
function fillSelects() {
  const fill = (sel, names) => {
    if (!sel) return;
    const keep = sel.value;
    const have = [...sel.options].slice(1).map((o) => o.value).join('\n');
    if (have === names.join('\n')) return;
    sel.replaceChildren(el('option', { value: '', text: 'any' }), ...names.map((n) => el('option', { value: n, text: n })));
    sel.value = keep;
  };
  const ins = ov.channels.filter((c) => c.direction === 'in').map((c) => c.name);
  const outs = ov.channels.filter((c) => c.direction === 'out').map((c) => c.name);
  fill($('#msg-filter [name=channel]'), ins);
  fill($('#dlq-filter [name=channel]'), ins);
  fill($('#dlq-filter [name=destination]'), outs);
  fill($('#msg-filter [name=route]'), ov.routes.map((r) => r.name));
}

let polling = false;

async function pollOnce() {
  if (polling) return;
  polling = true;
  try {
    const [s, ch, qs, rs] = await Promise.all([api('/api/v1/status'), api('/api/v1/channels'),
      api('/api/v1/queues'), api('/api/v1/routes')]);
    const now = Date.now();
    ov.channels = ch.channels;
    ov.routes = rs.routes;
    renderStatus(s);
    renderChannels(ch.channels, qs.queues, now);
    renderRoutes(rs.routes, now);
    ov.prev = {
      t: now,
      ch: Object.fromEntries(ch.channels.map((c) => [c.name, { in: c.received, out: c.delivered }])),
      routes: Object.fromEntries(rs.routes.map((r) => [r.name, r.routed])),
    };
    drawChart();
    fillSelects();
    const c = $('#conn');
    c.textContent = 'updated ' + new Date(now).toLocaleTimeString('en-GB');
    c.className = 'conn ok';
  } catch (e) {
    const c = $('#conn');
    c.textContent = 'no answer: ' + e.message;
    c.className = 'conn bad';
  } finally {
    polling = false;
  }
}

// ---- replay: by ids, or everything matching a filter (dry run first, then the job) ----

async function watchJob(job, out, bar) {
  for (;;) {
    const st = await api('/api/v1/replay/' + job);
    bar.max = Math.max(1, st.count);
    bar.value = st.replayed + st.failed;
    out.textContent = 'job ' + st.job + ': ' + st.replayed + ' of ' + st.count + ' replayed' +
      (st.failed ? ', ' + st.failed + ' failed' : '') + (st.done ? ' — done' : '…');
    if (st.done) return st;
    await new Promise((r) => setTimeout(r, 400));
  }
}

async function replay(body, out, bar) {
  const r = await api('/api/v1/replay', { method: 'POST', body });
  if (r.job === undefined) { out.textContent = 'nothing to replay'; return r; }
  bar.hidden = false;
  return watchJob(r.job, out, bar);
}

// A panel under a filter: "Dry run" counts what the filter's replay would take; then "Replay N".
function replayPanel(root, getBody, after) {
  const from = el('select', { name: 'from' }, el('option', { value: 'dead-letters', text: 'dead letters' }),
    el('option', { value: 'kept', text: 'kept messages (sent again)' }));
  const dry = el('button', { type: 'button', cls: 'dry-run', text: 'Replay all matching… (dry run)' });
  const go = el('button', { type: 'button', cls: 'replay-go', hidden: '' });
  const out = el('span', { cls: 'replay-out', 'aria-live': 'polite' });
  const bar = el('progress', { cls: 'replay-bar', max: '1', value: '0', hidden: '' });
  let body = null;
  dry.addEventListener('click', async () => {
    go.hidden = true;
    bar.hidden = true;
    try {
      body = getBody();
      if (from.value === 'kept') body.from = 'kept';
      const r = await api('/api/v1/replay', { method: 'POST', body: { ...body, dry_run: true } });
      out.textContent = r.count + ' would be replayed' + (r.headers_only ? ' (' + r.headers_only +
        ' kept without payload cannot be)' : '') + (r.ids && r.ids.length ? ': ' + r.ids.slice(0, 5).join(', ') +
        (r.count > 5 ? ', …' : '') : '');
      if (r.count > 0) { go.textContent = 'Replay ' + r.count; go.hidden = false; }
    } catch (e) { out.textContent = 'dry run: ' + e.message; }
  });
  go.addEventListener('click', async () => {
    go.hidden = true;
    try { await replay(body, out, bar); if (after) after(); } catch (e) { out.textContent = 'replay: ' + e.message; }
  });
  root.replaceChildren(el('label', {}, 'Replay from ', from), ' ', dry, ' ', go, ' ', bar, ' ', out);
  return { from, out, bar };
}

// The API's filter fields from a filter form (header NAME=VALUE → header.NAME).
function filterOf(form, keys) {
  const f = {};
  for (const k of keys) {
    const inp = form.elements[k];
    const v = inp ? inp.value.trim() : '';
    if (!v) continue;
    if (k === 'header') {
      const eq = v.indexOf('=');
      if (eq <= 0) throw new Error('header: write NAME=VALUE');
      f['header.' + v.slice(0, eq).trim()] = v.slice(eq + 1);
    } else f[k] = v;
  }
  return f;
}

// ---- message browser ----

const mb = { cursor: null, params: null, selected: new Set() };

function msgQuery(extra) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(mb.params)) p.set(k, v);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

async function loadMessages(append) {
  const tb = $('#msg-list tbody');
  try {
    const q = append && mb.cursor ? msgQuery({ cursor: mb.cursor }) : msgQuery();
    const r = await api('/api/v1/messages?' + q);
    if (!append) { tb.replaceChildren(); mb.selected.clear(); }
    for (const m of r.messages) {
      const cb = el('input', { type: 'checkbox', 'aria-label': 'select ' + m.id });
      cb.addEventListener('change', () => (cb.checked ? mb.selected.add(m.id) : mb.selected.delete(m.id)));
      tb.append(el('tr', { data: { id: m.id } }, el('td', {}, cb),
        el('td', {}, el('a', { href: '#/message/' + encodeURIComponent(m.id), cls: 'mono', text: m.id })),
        el('td', { text: m.received }), el('td', { text: m.channel }),
        el('td', { cls: 'status status-' + m.status, text: m.status }), el('td', { text: m.last_event })));
    }
    mb.cursor = r.next_cursor || null;
    $('#msg-more').hidden = !mb.cursor;
    $('#msg-count').textContent = tb.children.length + ' shown' + (mb.cursor ? ', more on the next page' : '');
    showError('');
  } catch (e) { showError('messages: ' + e.message); }
}

function messagesView(query) {
  const form = $('#msg-filter');
  const p = new URLSearchParams(query);
  for (const k of ['channel', 'route', 'status', 'since', 'until', 'q', 'limit']) {
    if (form.elements[k]) {
      const v = p.get(k) || (k === 'limit' ? '50' : '');
      if (form.elements[k].tagName === 'SELECT' && v && ![...form.elements[k].options].some((o) => o.value === v)) {
        form.elements[k].append(el('option', { value: v, text: v }));
      }
      form.elements[k].value = v;
    }
  }
  const hdr = [...p.keys()].find((k) => k.startsWith('header.'));
  form.elements.header.value = hdr ? hdr.slice(7) + '=' + p.get(hdr) : '';
  mb.params = Object.fromEntries(p.entries());
  mb.cursor = null;
  loadMessages(false);
}

function initMessages() {
  const form = $('#msg-filter');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    try {
      const f = filterOf(form, ['channel', 'route', 'status', 'since', 'until', 'header', 'q', 'limit']);
      location.hash = '#/messages?' + new URLSearchParams(f).toString();
    } catch (e) { showError(e.message); }
  });
  $('#msg-more').addEventListener('click', () => loadMessages(true));
  const panel = el('div');
  const sel = el('button', { type: 'button', text: 'Replay selected' });
  const selOut = el('span', { 'aria-live': 'polite' });
  const selBar = el('progress', { max: '1', value: '0', hidden: '' });
  const rp = replayPanel(panel, () => {
    const f = filterOf(form, ['channel', 'route', 'since', 'until', 'header', 'q']);
    const st = form.elements.status.value;
    if (st && st !== 'dead') throw new Error('replay takes status "dead" only (or none)');
    if (st) f.status = st;
    return f;
  }, () => loadMessages(false));
  sel.addEventListener('click', async () => {
    if (!mb.selected.size) { selOut.textContent = 'select messages first'; return; }
    const body = { ids: [...mb.selected] };
    if (rp.from.value === 'kept') body.from = 'kept';
    try { await replay(body, selOut, selBar); loadMessages(false); } catch (e) { selOut.textContent = 'replay: ' + e.message; }
  });
  $('#msg-replay').replaceChildren(el('p', {}, sel, ' ', selBar, ' ', selOut), panel);
}

// ---- one message: headers, payload shown readably, the trace ----

// HL7 v2: one segment a line; each field (and component) has its position as a title (PID-5.1).
function renderHl7(text) {
  const fs = text[3];
  const enc = text.slice(4, 8);
  const cs = enc[0] || '^';
  const box = el('div', { cls: 'hl7', role: 'list' });
  for (const seg of text.split(/\r\n|\r|\n/)) {
    if (!seg) continue;
    const line = el('div', { cls: 'seg', role: 'listitem' });
    const name = seg.slice(0, 3);
    const fields = seg.split(fs);
    line.append(el('span', { cls: 'segname', text: fields[0] }));
    for (let i = 1; i < fields.length; i++) {
      const n = name === 'MSH' ? i + 1 : i; // MSH-1 is the separator itself
      const pos = name + '-' + n;
      line.append(el('span', { cls: 'sep', text: fs }));
      const f = el('span', { cls: 'field', title: pos });
      const isEnc = name === 'MSH' && n === 2;
      const comps = isEnc ? [fields[i]] : fields[i].split(cs);
      if (comps.length > 1) {
        comps.forEach((c, k) => {
          if (k) f.append(el('span', { cls: 'sep', text: cs }));
          f.append(el('span', { cls: 'comp', title: pos + '.' + (k + 1), text: c }));
        });
      } else f.textContent = fields[i];
      line.append(f);
    }
    box.append(line);
  }
  return box;
}

function hexdump(bytes) {
  const lines = [];
  const n = Math.min(bytes.length, 65536);
  for (let o = 0; o < n; o += 16) {
    const row = bytes.subarray(o, Math.min(o + 16, n));
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const asc = [...row].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(o.toString(16).padStart(8, '0') + '  ' + hex.padEnd(48) + '  ' + asc);
  }
  if (bytes.length > n) lines.push('… ' + (bytes.length - n) + ' more bytes');
  return lines.join('\n');
}

// → [kind, node]: kind is hl7, json, text or binary.
function renderPayload(bytes, ctype) {
  let text = null;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch (e) { text = null; }
  if (text !== null && /[\x00-\x08\x0e-\x1a\x1e\x1f\x7f]/.test(text)) text = null;
  if (text === null) return ['binary, ' + bytes.length + ' bytes', el('pre', { cls: 'hex', text: hexdump(bytes) })];
  const body = text.replace(/^\x0b/, '').replace(/\x1c\r?$/, '');
  if (/^(MSH|FHS|BHS)./.test(body)) return ['HL7 v2', renderHl7(body)];
  if (/json/i.test(ctype) || /^\s*[[{]/.test(body)) {
    try { return ['JSON', el('pre', { cls: 'json', text: JSON.stringify(JSON.parse(body), null, 2) })]; } catch (e) { /* text */ }
  }
  return ['text', el('pre', { cls: 'text', text })];
}

async function messageView(id) {
  $('#m-id').textContent = id;
  for (const s of ['#m-meta', '#m-headers tbody', '#m-payload', '#m-outputs', '#m-trace']) $(s).replaceChildren();
  $('#m-ptype').textContent = '';
  $('#m-replay-out').textContent = '';
  let m;
  try { m = await api('/api/v1/messages/' + encodeURIComponent(id)); } catch (e) { showError('message ' + id + ': ' + e.message); return; }
  showError('');
  const meta = $('#m-meta');
  const kv = (k, v) => meta.append(el('dt', { text: k }), el('dd', { text: v }));
  kv('channel', m.channel);
  kv('received', m.received);
  kv('status', m.status);
  if (m.kept) {
    kv('kept', m.kept.keep + ' by ' + (m.kept.routes || []).join(', '));
    kv('size', fmtInt(m.kept.bytes) + ' bytes');
    for (const h of m.kept.headers || []) {
      $('#m-headers tbody').append(el('tr', {}, el('td', { text: h.name }), el('td', { cls: 'mono', text: h.value })));
    }
  } else kv('kept', 'not kept (keep: none, or deleted by retention)');
  const pl = $('#m-payload');
  if (m.kept && m.kept.payload_url) {
    try {
      const r = await api(m.kept.payload_url, { raw: true });
      const bytes = new Uint8Array(await r.arrayBuffer());
      const [kind, node] = renderPayload(bytes, r.headers.get('Content-Type') || '');
      $('#m-ptype').textContent = kind;
      pl.append(node);
    } catch (e) { pl.append(el('p', { text: 'payload: ' + e.message })); }
  } else pl.append(el('p', { cls: 'muted', text: 'the payload is not kept' }));
  // What each route's services made of it (kept with keep: all), as its destinations got it.
  const outs = $('#m-outputs');
  for (const [i, o] of ((m.kept && m.kept.outputs) || []).entries()) {
    const head = el('h3', {}, 'After the services of route ' + o.route + ' ');
    const kind = el('small');
    head.append(kind);
    const body = el('div', { cls: 'payload' });
    const hdrs = el('details', {}, el('summary', { text: 'headers (' + (o.headers || []).length + ')' }),
      el('table', {}, el('tbody', {}, ...(o.headers || []).map((h) =>
        el('tr', {}, el('td', { text: h.name }), el('td', { cls: 'mono', text: h.value }))))));
    outs.append(el('section', { cls: 'output', data: { output: String(i) } }, head, hdrs, body));
    if (!o.payload_url) { body.append(el('p', { cls: 'muted', text: 'the payload is not kept' })); continue; }
    try {
      const r = await api(o.payload_url, { raw: true });
      const [k, node] = renderPayload(new Uint8Array(await r.arrayBuffer()), r.headers.get('Content-Type') || '');
      kind.textContent = k + ', ' + fmtInt(o.bytes) + ' bytes';
      body.append(node);
    } catch (e) { body.append(el('p', { text: 'output ' + i + ': ' + e.message })); }
  }
  const tl = $('#m-trace');
  for (const a of m.trace || []) {
    tl.append(el('li', { cls: 'ev ev-' + String(a.event).replace(/[^a-z]+/g, '-') },
      el('time', { text: a.time }), ' ', el('strong', { text: a.event }),
      a.route ? ' route ' + a.route : '', a.channel ? ' channel ' + a.channel : '',
      a.attempt ? ' attempt ' + a.attempt : '', a.error ? el('span', { cls: 'err', text: ' ' + a.error }) : ''));
  }
  const btn = $('#m-replay');
  btn.onclick = async () => {
    const body = { ids: [id] };
    if (m.status !== 'dead') body.from = 'kept';
    const bar = el('progress', { max: '1', value: '0' });
    try { await replay(body, $('#m-replay-out'), bar); messageView(id); } catch (e) { $('#m-replay-out').textContent = 'replay: ' + e.message; }
  };
}

// ---- dead letters ----

const dq = { params: {} };

async function loadDeadLetters() {
  const tb = $('#dlq-list tbody');
  try {
    const r = await api('/api/v1/dead-letters?' + new URLSearchParams({ ...dq.params, limit: '200' }));
    tb.replaceChildren();
    for (const d of r.dead_letters) {
      const out = el('span', { cls: 'replay-out', 'aria-live': 'polite' });
      const bar = el('progress', { max: '1', value: '0', hidden: '' });
      const btn = el('button', { type: 'button', cls: 'replay-one', text: 'Replay', data: { id: d.id },
        'aria-label': 'Replay ' + d.id });
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        try { await replay({ ids: [d.id] }, out, bar); setTimeout(loadDeadLetters, 1000); } catch (e) { out.textContent = e.message; btn.disabled = false; }
      });
      tb.append(el('tr', { data: { id: d.id } },
        el('td', {}, el('a', { href: '#/message/' + encodeURIComponent(d.id), cls: 'mono', text: d.id })),
        el('td', { text: d.time }), el('td', { text: d.channel }), el('td', { text: d.destination }),
        el('td', { text: d.route }), el('td', { cls: 'num', text: fmtInt(d.attempts) }),
        el('td', { cls: 'reason', text: d.error }), el('td', {}, btn, ' ', bar, ' ', out)));
    }
    $('#dlq-count').textContent = r.count + ' dead letter' + (r.count === 1 ? '' : 's') +
      (r.count > r.dead_letters.length ? ', the oldest ' + r.dead_letters.length + ' shown' : '');
    showError('');
  } catch (e) { showError('dead letters: ' + e.message); }
}

function initDeadLetters() {
  const form = $('#dlq-filter');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    dq.params = filterOf(form, ['destination', 'channel', 'since', 'q']);
    loadDeadLetters();
  });
  replayPanel($('#dlq-replay'), () => ({ ...dq.params }), loadDeadLetters);
}

// ---- pages by the URL's hash ----

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  let view = 'overview';
  if (path === 'messages') view = 'messages';
  else if (path.startsWith('message/')) view = 'message';
  else if (path === 'dead-letters') view = 'dead-letters';
  for (const s of document.querySelectorAll('[data-view]')) s.hidden = s.dataset.view !== view;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view || (view === 'message' && a.dataset.nav === 'messages')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = 'junction · ' + view.replace('-', ' ');
  if (view === 'messages') messagesView(query || '');
  else if (view === 'message') messageView(decodeURIComponent(path.slice(8)));
  else if (view === 'dead-letters') loadDeadLetters();
  else drawChart();
}

initMessages();
initDeadLetters();
window.addEventListener('hashchange', route);
window.addEventListener('resize', drawChart);
route();
pollOnce();
setInterval(pollOnce, POLL_MS);

// copanel operator console: one ES module, no dependencies.
// Speaks copanel.v1.json over /ws. Live updates: every event of a stream re-reads the stream's
// state with `state_at {seq}` (the server's own fold), so the client holds no fold of its own.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'copanel.token';

// ---- token: ?token= in the URL wins, then kept in sessionStorage (and dropped from the URL)
const params = new URLSearchParams(location.search);
if (params.get('token')) {
  sessionStorage.setItem(TOKEN_KEY, params.get('token'));
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
}
const token = sessionStorage.getItem(TOKEN_KEY);
let me = null;
try {
  const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  me = JSON.parse(decodeURIComponent(escape(atob(b64))));
} catch { me = null; }

// ---- state
const states = {};       // stream -> latest state shown live
const last = {};         // stream -> last seq received (events with seq <= it are ignored)
const subscribed = new Set();
let epoch = null;
let openSession = null;  // 'session/<id>'
let openContact = null;  // 'contact/<id>' linked to the open session, followed live
const activity = new Map(); // operator -> {what, until}
let viewSeq = null;      // null = live; else the seq the timeline shows
let viewState = null;
let editingNote = null;
let ws = null, nextId = 1, backoff = 500;
const pending = new Map(); // id -> {resolve, reject}
const feed = () => `operator/${me.sub}`;

// ---- error bar
function showError(e) {
  const text = e.code ? `${e.code}: ${e.message}${e.field ? ` (${e.field})` : ''}${e.head !== undefined ? ` [head ${e.head}]` : ''}` : String(e.message || e);
  $('error-text').textContent = text;
  $('errorbar').hidden = false;
}
$('error-close').onclick = () => { $('errorbar').hidden = true; };

// ---- connection
function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws?token=${encodeURIComponent(token)}`;
  ws = new WebSocket(url, 'copanel.v1.json');
  ws.onopen = () => {
    backoff = 500;
    $('status').textContent = 'online';
    $('status').className = 'status online';
    for (const s of [feed(), 'catalog', ...(openSession ? [openSession] : []), ...(openContact ? [openContact] : [])]) subscribe(s);
    refreshSessions();
  };
  ws.onmessage = (m) => onFrame(JSON.parse(m.data));
  ws.onclose = (ev) => {
    $('status').textContent = `offline (${ev.code}), reconnecting`;
    $('status').className = 'status';
    subscribed.clear();
    for (const p of pending.values()) p.reject({ code: 'unavailable', message: 'connection lost; retry' });
    pending.clear();
    if (ev.code === 4001) { showError({ code: 'unauthorized', message: 'the token has expired; open a new link' }); return; }
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject({ code: 'unavailable', message: 'not connected' });
  const id = nextId++;
  ws.send(JSON.stringify({ ...frame, id }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

function subscribe(stream) {
  const frame = { type: 'subscribe', stream };
  if (last[stream] !== undefined) frame.since = last[stream]; // resume: no loss, no duplicates
  subscribed.add(stream);
  send(frame).catch((e) => {
    subscribed.delete(stream);
    if (e.field === 'since') { delete last[stream]; subscribe(stream); } else showError(e);
  });
}

let cmdCounter = 0;
function command(stream, cmd) {
  const command_id = `ui-${Date.now().toString(36)}-${(cmdCounter++).toString(36)}`;
  return send({ type: 'command', stream, command_id, command: cmd }).catch((e) => { showError(e); throw e; });
}

function onFrame(f) {
  if (f.id !== undefined && pending.has(f.id)) {
    const p = pending.get(f.id);
    pending.delete(f.id);
    if (f.type === 'error') { p.reject(f); return; }
    // a subscribe gets `subscribed` then `snapshot` (same id): resolved by the first, both
    // handled below
    p.resolve(f);
  }
  switch (f.type) {
    case 'subscribed':
      if (epoch && f.epoch !== epoch) { // the store was replaced: drop what we know
        for (const k of Object.keys(last)) delete last[k];
        epoch = f.epoch;
        subscribe(f.stream);
        return;
      }
      epoch = f.epoch;
      break;
    case 'snapshot':
      last[f.stream] = f.seq;
      states[f.stream] = f.state;
      render();
      break;
    case 'event':
      if (last[f.stream] !== undefined && f.seq <= last[f.stream]) return; // already seen
      last[f.stream] = f.seq;
      refresh(f.stream);
      break;
    case 'presence':
      if (f.stream === openSession) $('viewers').textContent = 'viewing: ' + f.viewers.map((v) => v.name || v.operator_id).join(', ');
      break;
    case 'activity':
      if (f.stream === openSession && f.operator !== me.sub) {
        activity.set(f.operator, { what: f.what, until: Date.now() + 3000 });
        renderActivity();
        setTimeout(renderActivity, 3100);
      }
      break;
    case 'error':
      if (f.stream && f.id === undefined) subscribed.delete(f.stream);
      // The linked contact went away (removed from the directory): not the user's error.
      if (f.stream && f.stream === openContact) { openContact = null; delete states[f.stream]; render(); break; }
      if (f.id === undefined) showError(f);
      break;
  }
}

// Re-reads a stream's state at its last seen seq; coalesces bursts of events.
const inflight = new Set();
async function refresh(stream) {
  if (inflight.has(stream)) return;
  inflight.add(stream);
  try {
    let seq;
    do {
      seq = last[stream];
      const r = await send({ type: 'state_at', stream, seq });
      states[stream] = r.state;
    } while (last[stream] !== seq);
  } catch (e) { showError(e); }
  inflight.delete(stream);
  if (stream === feed()) refreshSessions();
  render();
}

async function refreshSessions() {
  try {
    const r = await send({ type: 'query', what: 'sessions' });
    states.sessions = r.sessions;
    render();
  } catch (e) { showError(e); }
}

// ---- opening a session and the timeline
function open(sessionId) {
  const stream = `session/${sessionId}`;
  if (openSession && openSession !== stream && subscribed.has(openSession)) {
    send({ type: 'unsubscribe', stream: openSession }).catch(() => {});
    subscribed.delete(openSession);
  }
  if (openSession !== stream) { delete last[stream]; delete states[stream]; }
  openSession = stream;
  viewSeq = null;
  editingNote = null;
  activity.clear();
  clientBase = null;
  followContact(null);
  $('viewers').textContent = '';
  $('main').hidden = false;
  subscribe(stream);
  render();
}

// Follows the contact linked to the open session (its card updates live), or none.
function followContact(contactId) {
  const stream = contactId ? `contact/${contactId}` : null;
  if (stream === openContact) return;
  if (openContact && subscribed.has(openContact)) {
    send({ type: 'unsubscribe', stream: openContact }).catch(() => {});
    subscribed.delete(openContact);
  }
  if (openContact) { delete last[openContact]; delete states[openContact]; }
  openContact = stream;
  if (stream) subscribe(stream);
}

function renderActivity() {
  const now = Date.now();
  for (const [op, a] of activity) if (a.until <= now) activity.delete(op);
  $('activity').textContent = [...activity].map(([op, a]) => `${op} is ${a.what}`).join('; ');
}

// Tells the other viewers what this operator is doing; at most one hint a second per section.
const hinted = {};
function hint(what) {
  if (!openSession || viewSeq !== null || !ws || ws.readyState !== WebSocket.OPEN) return;
  const now = Date.now();
  if (hinted[what] && now - hinted[what] < 1000) return;
  hinted[what] = now;
  // Activity frames carry no id and get no answer (a refusal comes back as an error frame).
  ws.send(JSON.stringify({ type: 'activity', stream: openSession, what }));
}

$('timeline').addEventListener('input', async (ev) => {
  const seq = Number(ev.target.value);
  if (seq >= (last[openSession] || 0)) { viewSeq = null; render(); return; }
  viewSeq = seq;
  try {
    const r = await send({ type: 'state_at', stream: openSession, seq });
    if (viewSeq === seq) { viewState = r.state; render(); }
  } catch (e) { showError(e); }
});
$('timeline-live').onclick = () => { viewSeq = null; render(); };

// ---- rendering
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}
const btn = (label, onclick) => h('button', { type: 'button', onclick }, label);
const sid = () => openSession.slice('session/'.length);

function render() {
  $('me').textContent = me ? `${me.name || me.sub} (${me.role}, ${me.company})` : 'no valid token: open the link from `copanel token --url …`';
  const sessions = states.sessions || [];
  $('sessions').replaceChildren(...sessions.map((s) => h('li', { 'data-session': s.session_id, class: `session/${s.session_id}` === openSession ? 'open' : '' },
    h('a', { href: '#', onclick: (e) => { e.preventDefault(); open(s.session_id); } }, s.session_id),
    ` ${s.client_name || ''} `, h('span', { class: 'muted' }, s.role))));
  const f = states[feed()] || { invitations: [], assignments: [], starred: [] };
  $('invitations').replaceChildren(...f.invitations.map((i) => h('li', { 'data-invitation': i.session_id },
    `${i.session_id} from ${i.by}`,
    btn('Open', () => open(i.session_id)),
    btn('Accept', () => command(`session/${i.session_id}`, { kind: 'accept_invitation' }).then(() => open(i.session_id))),
    btn('Decline', () => command(`session/${i.session_id}`, { kind: 'decline_invitation' })))));
  $('assignments').replaceChildren(...f.assignments.map((a) => h('li', {},
    `${a.session_id} from ${a.by}${a.group ? ` to ${a.group}` : ''}${a.note ? `: ${a.note}` : ''}`,
    btn('Open', () => open(a.session_id)),
    btn('Claim', () => command(`session/${a.session_id}`, { kind: 'claim' }).then(() => open(a.session_id))))));
  if (openSession) renderPanel(f);
}

function tagStyle(tag) {
  const defs = (states.catalog && states.catalog.tag_definitions) || [];
  const d = defs.find((x) => x.tag.toLowerCase() === tag.toLowerCase());
  return d ? { background: d.background, color: d.text } : { background: '#e0e0e0', color: '#1f1f1f' };
}

function renderPanel(f) {
  const head = last[openSession] || 0;
  const historic = viewSeq !== null;
  const s = historic ? viewState : states[openSession];
  const tl = $('timeline');
  tl.max = String(head);
  if (!historic) tl.value = String(head);
  $('timeline-label').textContent = historic ? `seq ${viewSeq} of ${head} (read-only)` : `live, seq ${head}`;
  $('timeline-live').hidden = !historic;
  $('panel').disabled = historic;
  $('session-title').textContent = openSession;
  if (!s) return;
  const owner = s.owner ? (s.owner.operator_id || `group ${s.owner.group}`) : '—';
  $('session-status').textContent = `${s.status}, owner ${owner}, ${s.messages} messages${s.anonymized ? ', anonymised' : ''}`;
  // client form: not overwritten while the user is typing in it
  if (!$('client-form').contains(document.activeElement)) {
    $('client-name').value = s.client.name; $('client-phone').value = s.client.phone; $('client-email').value = s.client.email;
  }
  $('contact-line').textContent = s.contact_id ? `linked to contact ${s.contact_id}` : 'not in the directory';
  if (!historic) followContact(s.contact_id || null);
  $('dir-add').hidden = !!s.contact_id;
  $('dir-disconnect').hidden = !s.contact_id;
  $('dir-remove').hidden = !s.contact_id;
  $('detail-form').hidden = !s.contact_id;
  const c = openContact && openContact === `contact/${s.contact_id}` ? states[openContact] : null;
  $('contact-card').hidden = !c;
  if (c) {
    $('contact-name').textContent = c.name || '(no name)';
    $('contact-phone').textContent = c.phone;
    $('contact-email').textContent = c.email;
    $('contact-details').replaceChildren(...c.details.map((d) => h('li', { 'data-detail': d.value }, `${d.detail}: ${d.value}`, ' ', h('span', { class: 'muted' }, `— ${d.added_by}`))));
    $('contact-sessions').textContent = `linked sessions: ${c.sessions.join(', ')}`;
  }
  const isOwner = s.owner && s.owner.operator_id === me.sub;
  const staff = ['supervisor', 'admin', 'service'].includes(me.role);
  $('session-actions').hidden = historic || (s.status !== 'open' && !(s.status === 'closed' && me.role === 'admin' && !s.anonymized));
  $('redirect-form').hidden = s.status !== 'open' || !(isOwner || staff);
  $('session-close').hidden = s.status !== 'open';
  $('session-anonymize').hidden = !(s.status === 'closed' && me.role === 'admin' && !s.anonymized);
  $('collaborators').replaceChildren(...s.collaborators.map((c) => h('li', { 'data-collaborator': c.operator_id },
    `${c.operator_id} (${c.status}, invited by ${c.invited_by})`,
    c.status === 'invited' && c.operator_id === me.sub ? [
      btn('Accept', () => command(openSession, { kind: 'accept_invitation' })),
      btn('Decline', () => command(openSession, { kind: 'decline_invitation' }))] : null,
    c.status === 'invited' && c.operator_id !== me.sub ? btn('Cancel', () => command(openSession, { kind: 'cancel_invitation', operator_id: c.operator_id })) : null,
    c.status === 'joined' && c.operator_id === me.sub ? btn('Leave', () => command(openSession, { kind: 'leave' })) : null,
    c.operator_id !== me.sub ? btn('Remove', () => command(openSession, { kind: 'remove_collaborator', operator_id: c.operator_id })) : null)));
  $('params').replaceChildren(...Object.entries(s.parameters).map(([k, p]) => h('tr', { 'data-param': k },
    h('td', {}, k), h('td', {}, p.value), h('td', { class: 'muted' }, `${p.source}${p.read_only ? ', read-only' : ''}`),
    h('td', {}, p.read_only ? '' : btn('×', () => command(openSession, { kind: 'remove_parameter', key: k }))))));
  $('tags').replaceChildren(...s.tags.map((t) => h('span', { class: 'tag', 'data-tag': t.tag, style: tagStyle(t.tag), title: `${t.source} by ${t.added_by}` },
    t.tag, btn('×', () => command(openSession, { kind: 'remove_tag', tag: t.tag })))));
  $('notes').replaceChildren(...s.notes.map((n) => h('li', { 'data-note': n.note_id },
    h('span', { class: 'note-text' }, n.text), ' ', h('span', { class: 'muted' }, `— ${n.author}, ${new Date(n.at).toLocaleString()}`),
    btn('Edit', () => { editingNote = n.note_id; $('note-text').value = n.text; $('note-add').textContent = 'Save note'; $('note-cancel').hidden = false; }),
    btn('Delete', () => command(openSession, { kind: 'delete_note', note_id: n.note_id })))));
  const templates = (states.catalog && states.catalog.templates) || [];
  const starred = new Set(f.starred);
  const ordered = [...templates.filter((t) => starred.has(t.template_id)), ...templates.filter((t) => !starred.has(t.template_id))];
  $('templates').replaceChildren(...ordered.map((t) => h('li', { 'data-template': t.template_id },
    btn(starred.has(t.template_id) ? '★' : '☆', () => command(feed(), { kind: starred.has(t.template_id) ? 'unstar_template' : 'star_template', template_id: t.template_id })),
    h('strong', {}, t.title), ' ', h('span', { class: 'muted' }, t.text),
    btn('Post', () => command(openSession, { kind: 'post_message', from: 'operator', template_id: t.template_id })))));
}

// ---- forms
function onSubmit(id, fn) {
  $(id).addEventListener('submit', (ev) => { ev.preventDefault(); if (openSession && viewSeq === null) fn(); });
}
// Client info is edited as a whole form: if someone else changes it while this operator types,
// saving shows the conflict (theirs against the form) instead of silently overwriting; saving
// again overwrites on purpose.
let clientBase = null; // the client info the current edit started from
$('client-form').addEventListener('focusin', () => {
  if (clientBase === null && states[openSession]) clientBase = { ...states[openSession].client };
});
onSubmit('client-form', () => {
  const now = states[openSession] && states[openSession].client;
  const same = (x, y) => x && y && x.name === y.name && x.phone === y.phone && x.email === y.email;
  if (clientBase && now && !same(clientBase, now)) {
    showError({ code: 'conflict', message: `the client info was changed by someone else while you edited it (now: ${now.name}, ${now.phone}, ${now.email}); press Save again to overwrite it with yours` });
    clientBase = { ...now };
    return;
  }
  command(openSession, { kind: 'set_client_info', name: $('client-name').value, phone: $('client-phone').value, email: $('client-email').value })
    .then(() => { clientBase = null; document.activeElement.blur(); }, () => {});
});
onSubmit('param-form', () => command(openSession, { kind: 'set_parameter', key: $('param-key').value, value: $('param-value').value })
  .then(() => { $('param-key').value = ''; $('param-value').value = ''; }, () => {}));
onSubmit('tag-form', () => command(openSession, { kind: 'add_tag', tag: $('tag-input').value }).then(() => { $('tag-input').value = ''; }, () => {}));
onSubmit('note-form', () => {
  const text = $('note-text').value;
  const cmd = editingNote ? { kind: 'edit_note', note_id: editingNote, text } : { kind: 'add_note', text };
  command(openSession, cmd).then(() => { $('note-text').value = ''; endEdit(); }, () => {});
});
function endEdit() { editingNote = null; $('note-add').textContent = 'Add note'; $('note-cancel').hidden = true; }
$('note-cancel').onclick = () => { $('note-text').value = ''; endEdit(); };
onSubmit('invite-form', () => command(openSession, { kind: 'invite_collaborator', operator_id: $('invite-id').value }).then(() => { $('invite-id').value = ''; }, () => {}));
onSubmit('detail-form', () => command(openSession, { kind: 'add_contact_detail', detail: $('detail-kind').value, value: $('detail-value').value }).then(() => { $('detail-value').value = ''; }, () => {}));
onSubmit('contact-search', async () => {
  try {
    const r = await send({ type: 'query', what: 'contacts', q: $('contact-q').value });
    $('contact-results').replaceChildren(...r.contacts.map((c) => h('li', {},
      `${c.name} ${c.phone} ${c.email}`, btn('Link', () => command(openSession, { kind: 'link_contact', contact_id: c.contact_id })))));
  } catch (e) { showError(e); }
});
onSubmit('redirect-form', () => {
  const cmd = { kind: 'redirect', [$('redirect-kind').value]: $('redirect-to').value };
  if ($('redirect-note').value) cmd.note = $('redirect-note').value;
  command(openSession, cmd).then(() => { $('redirect-to').value = ''; $('redirect-note').value = ''; }, () => {});
});
$('session-close').onclick = () => {
  if (confirm(`Close ${openSession}?`)) command(openSession, { kind: 'close_session' }).catch(() => {});
};
$('session-anonymize').onclick = () => {
  if (confirm(`Erase the personal data of ${openSession}? This cannot be undone.`)) command(openSession, { kind: 'anonymize' }).catch(() => {});
};
for (const [id, what] of [['note-text', 'typing a note'], ['client-form', 'editing client info'], ['param-form', 'editing parameters'], ['tag-input', 'adding a tag'], ['redirect-form', 'redirecting the session']]) {
  $(id).addEventListener('input', () => hint(what));
}
$('dir-add').onclick = () => command(openSession, { kind: 'add_to_directory' }).catch(() => {});
$('dir-disconnect').onclick = () => command(openSession, { kind: 'disconnect_contact' }).catch(() => {});
$('dir-remove').onclick = () => command(openSession, { kind: 'remove_contact' }).catch(() => {});
$('tag-input').addEventListener('input', async () => {
  try {
    const r = await send({ type: 'query', what: 'tag_suggestions', prefix: $('tag-input').value });
    const seen = new Set();
    $('tag-suggestions').replaceChildren(...[...r.mine, ...r.company].filter((t) => !seen.has(t.tag) && seen.add(t.tag)).map((t) => h('option', { value: t.tag })));
  } catch { /* suggestions are best effort */ }
});

// ---- start
render();
if (!me) showError({ code: 'unauthorized', message: 'no token: open the console with ?token=<token> (copanel token --url http://HOST:PORT …)' });
else connect();

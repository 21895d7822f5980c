// Real-browser test of the operator console (run by tests/console.rs).
// Usage: node console.mjs <base-url> <token-A> <token-B> <session-id>
// Operator A adds a tag, a note and a parameter through the UI; operator B's page shows them
// live; B's timeline at the seq before the tag shows the panel without it. A's page goes through
// a TCP proxy that the script cuts: while A is offline B edits, and after the cut heals A shows
// every change exactly once. Then the contact card, activity hints, redirect and close.
// Exit 0 = pass.
import { chromium } from 'playwright-core';
import net from 'node:net';

const [base, tokenA, tokenB, session] = process.argv.slice(2);
if (!base || !tokenA || !tokenB || !session) {
  console.error('usage: node console.mjs <base-url> <token-A> <token-B> <session-id>');
  process.exit(2);
}
const TOTAL_MS = 80_000;
const timer = setTimeout(() => { console.error('FAIL: over 80 s'); process.exit(1); }, TOTAL_MS);

// playwright gives every launch a fresh temporary profile (--user-data-dir) and removes it.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// A TCP proxy on 127.0.0.1 to the server, for operator A only: `cut()` drops every connection
// and refuses new ones (a network outage), `heal()` lets them through again.
const target = new URL(base);
let refusing = false;
const sockets = new Set();
const proxy = net.createServer((client) => {
  if (refusing) { client.destroy(); return; }
  const upstream = net.connect(Number(target.port), target.hostname);
  sockets.add(client); sockets.add(upstream);
  const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
  client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
  client.pipe(upstream); upstream.pipe(client);
});
await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
const proxied = `http://127.0.0.1:${proxy.address().port}`;
const cut = () => { refusing = true; for (const s of sockets) s.destroy(); sockets.clear(); };
const heal = () => { refusing = false; };

let failed = false;
let diagnose = async () => {};
try {
  const step = (m) => console.log(`- ${m}`);
  const pages = [];
  for (const [token, origin] of [[tokenA, proxied], [tokenB, base]]) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
    page.on('dialog', (d) => d.accept());
    await page.goto(`${origin}/?token=${token}`);
    await page.locator('#status.online').waitFor();
    await page.locator(`#sessions [data-session="${session}"] a`).click();
    await page.locator('#session-title', { hasText: `session/${session}` }).waitFor();
    await page.locator('#params [data-param="crm_id"]').waitFor();
    pages.push(page);
  }
  const [a, b] = pages;
  diagnose = async () => {
    for (const [name, p] of [['A', a], ['B', b]]) {
      const bar = await p.locator('#errorbar').isVisible() ? await p.locator('#error-text').textContent() : '(none)';
      const status = await p.locator('#session-status').textContent();
      console.error(`  ${name}: error bar ${bar}; session ${status}`);
    }
  };
  step('both operators see the session');
  if (await a.locator('#tags [data-tag]').count() !== 0) throw new Error('the session starts with tags');
  const headBefore = Number(await b.locator('#timeline').getAttribute('max'));

  await a.fill('#tag-input', 'VIP');
  await a.click('#tag-add');
  await a.locator('#tags [data-tag="VIP"]').waitFor();
  await b.locator('#tags [data-tag="VIP"]').waitFor();
  step('tag added by A shows on B live');

  await a.fill('#note-text', 'Call back after 3 pm');
  await a.click('#note-add');
  await b.locator('#notes li', { hasText: 'Call back after 3 pm' }).waitFor();
  step('note added by A shows on B live');

  await a.fill('#param-key', 'order');
  await a.fill('#param-value', 'A-1');
  await a.click('#param-set');
  await b.locator('#params [data-param="order"]', { hasText: 'A-1' }).waitFor();
  step('parameter set by A shows on B live');

  const headAfter = Number(await b.locator('#timeline').getAttribute('max'));
  if (headAfter !== headBefore + 3) throw new Error(`B's timeline head is ${headAfter}, want ${headBefore + 3}`);
  await b.locator('#timeline').evaluate((el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', { bubbles: true })); }, headBefore);
  await b.locator('#timeline-label', { hasText: `seq ${headBefore} of ${headAfter}` }).waitFor();
  await b.locator('#panel[disabled]').waitFor({ state: 'attached' });
  await b.locator('#tags [data-tag="VIP"]').waitFor({ state: 'detached' });
  if (await b.locator('#notes li').count() !== 0) throw new Error('notes shown at the earlier seq');
  if (await b.locator('#params [data-param="order"]').count() !== 0) throw new Error('parameter shown at the earlier seq');
  step(`B's timeline at seq ${headBefore} shows the earlier state, read-only`);

  await b.click('#timeline-live');
  await b.locator('#tags [data-tag="VIP"]').waitFor();
  step('back to live');

  // An error is shown clearly: a duplicate parameter key that is read-only.
  await a.fill('#param-key', 'crm_id');
  await a.fill('#param-value', 'x');
  await a.click('#param-set');
  await a.locator('#errorbar', { hasText: 'forbidden' }).waitFor();
  step('a refused command shows in the error bar');
  await a.click('#error-close');

  // ---- a conflict on the client info: B saves while A is editing; A's save shows it.
  await a.click('#client-phone');
  await a.fill('#client-phone', '+420 111 111 111');
  await b.fill('#client-email', 'jana.new@example.com');
  await b.click('#client-form button');
  await a.locator('#errorbar').waitFor({ state: 'hidden' });
  await b.locator('#client-email').evaluate((el) => el.blur());
  // A's form keeps what A typed while B's change arrives underneath.
  await a.waitForFunction((want) => Number(document.querySelector('#timeline').max) >= want, headAfter + 1);
  await a.click('#client-form button');
  await a.locator('#errorbar', { hasText: 'conflict' }).waitFor();
  await a.locator('#error-text', { hasText: 'jana.new@example.com' }).waitFor();
  await a.click('#error-close');
  await a.click('#client-form button');
  await b.locator('#client-phone').evaluate((el, v) => new Promise((resolve) => {
    const t = setInterval(() => { if (el.value === v) { clearInterval(t); resolve(); } }, 50);
  }), '+420 111 111 111');
  step("A's save after B's change shows the conflict; saving again overwrites on purpose");

  // ---- reconnect and resume: A is cut off while B edits.
  cut();
  await a.locator('#status', { hasText: 'offline' }).waitFor();
  await b.fill('#tag-input', 'outage');
  await b.click('#tag-add');
  await b.locator('#tags [data-tag="outage"]').waitFor();
  await b.fill('#note-text', 'written while A was away');
  await b.click('#note-add');
  await b.locator('#notes li', { hasText: 'written while A was away' }).waitFor();
  await a.fill('#param-key', 'offline');
  await a.fill('#param-value', 'x');
  await a.click('#param-set');
  await a.locator('#errorbar', { hasText: 'unavailable' }).waitFor();
  await a.click('#error-close');
  step('A is offline: its command is refused as unavailable while B goes on editing');
  heal();
  await a.locator('#status.online').waitFor({ timeout: 20_000 });
  await a.locator('#tags [data-tag="outage"]').waitFor();
  await a.locator('#notes li', { hasText: 'written while A was away' }).waitFor();
  const headB = Number(await b.locator('#timeline').getAttribute('max'));
  await a.locator('#timeline-label', { hasText: `live, seq ${headB}` }).waitFor();
  for (const p of [a, b]) {
    const notes = await p.locator('#notes li').count();
    const tags = await p.locator('#tags [data-tag]').count();
    if (notes !== 2 || tags !== 2) throw new Error(`after resume: ${notes} notes and ${tags} tags, want 2 and 2`);
  }
  if (await a.locator('#params [data-param="offline"]').count() !== 0) throw new Error('a refused command was applied');
  step(`A reconnected and resumed at seq ${headB}: B's changes shown once, nothing lost`);

  // ---- the directory: A adds the client, B adds a detail, A's contact card shows it live.
  await a.click('#dir-add');
  await a.locator('#contact-card #contact-name', { hasText: 'Jana Nováková' }).waitFor();
  await b.locator('#contact-card #contact-name', { hasText: 'Jana Nováková' }).waitFor();
  await b.selectOption('#detail-kind', 'email');
  await b.fill('#detail-value', 'jana.work@example.com');
  await b.click('#detail-form button');
  await a.locator('#contact-details [data-detail="jana.work@example.com"]').waitFor();
  step("the linked contact's card and details update live on both pages");

  // ---- activity: B sees that A is typing a note.
  await a.locator('#note-text').pressSequentially('thinking', { delay: 20 });
  await b.locator('#activity', { hasText: 'op1 is typing a note' }).waitFor();
  step('B sees that A is typing a note');

  // ---- redirect to B, then B closes.
  await a.selectOption('#redirect-kind', 'operator_id');
  await a.fill('#redirect-to', 'op2');
  await a.fill('#redirect-note', 'over to you');
  await a.click('#redirect-go');
  await b.locator('#session-status', { hasText: 'owner op2' }).waitFor();
  await b.locator('#notes li', { hasText: 'over to you' }).waitFor();
  await b.click('#session-close');
  await b.locator('#session-status', { hasText: 'closed' }).waitFor();
  await b.locator('#redirect-form').waitFor({ state: 'hidden' });
  step('A redirected the session to B with a note; B closed it');
  console.log('PASS');
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
  await diagnose().catch(() => {});
} finally {
  clearTimeout(timer);
  await browser.close();
  proxy.close();
}
process.exit(failed ? 1 : 0);

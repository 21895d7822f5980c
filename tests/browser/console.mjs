// Real-browser test of the operator console (run by tests/console.rs).
// Usage: node console.mjs <base-url> <token-A> <token-B> <session-id>
// Operator A adds a tag, a note and a parameter through the UI; operator B's page shows them
// live; B's timeline at the seq before the tag shows the panel without it. Exit 0 = pass.
import { chromium } from 'playwright-core';

const [base, tokenA, tokenB, session] = process.argv.slice(2);
if (!base || !tokenA || !tokenB || !session) {
  console.error('usage: node console.mjs <base-url> <token-A> <token-B> <session-id>');
  process.exit(2);
}
const TOTAL_MS = 60_000;
const timer = setTimeout(() => { console.error('FAIL: over 60 s'); process.exit(1); }, TOTAL_MS);

// playwright gives every launch a fresh temporary profile (--user-data-dir) and removes it.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const step = (m) => console.log(`- ${m}`);
  const pages = [];
  for (const token of [tokenA, tokenB]) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
    await page.goto(`${base}/?token=${token}`);
    await page.locator('#status.online').waitFor();
    await page.locator(`#sessions [data-session="${session}"] a`).click();
    await page.locator('#session-title', { hasText: `session/${session}` }).waitFor();
    await page.locator('#params [data-param="crm_id"]').waitFor();
    pages.push(page);
  }
  const [a, b] = pages;
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
  console.log('PASS');
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
} finally {
  clearTimeout(timer);
  await browser.close();
}
process.exit(failed ? 1 : 0);

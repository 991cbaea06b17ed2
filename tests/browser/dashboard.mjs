// The dashboard in a real browser: Debian's chromium driven by playwright-core, against a
// junction that tests/integration/test_dashboard.py started (it passes what to expect in the
// environment, below). Prints "ok: ..." or "FAIL: ..." per check and, last, one JSON line with
// what the Python side checks further (the replayed id reached the receiver). Exit 1 on a failure.
//
//   JN_DASH_URL       the admin listener, http://127.0.0.1:PORT/
//   JN_DASH_TOKEN     the admin token the page must ask for
//   JN_DASH_INGEST    the HTTP IN channel's URL (posting moves the counters)
//   JN_DASH_IN        that channel's name; JN_DASH_CHANNELS: every channel's, comma separated
//   JN_DASH_HL7_ID    a kept HL7 message, dead-lettered (the DLQ row, then replayed)
//   JN_DASH_XSS_ID    a kept message whose payload is an <img onerror> HTML snippet
//   JN_DASH_SHOTS     the folder for the screenshots (dashboard-overview.png, dashboard-message.png)
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const env = (k) => {
  if (!process.env[k]) { console.log('FAIL: ' + k + ' is not set'); process.exit(2); }
  return process.env[k];
};
const URL_ = env('JN_DASH_URL');
const TOKEN = env('JN_DASH_TOKEN');
const INGEST = env('JN_DASH_INGEST');
const IN = env('JN_DASH_IN');
const CHANNELS = env('JN_DASH_CHANNELS').split(',');
const HL7_ID = env('JN_DASH_HL7_ID');
const XSS_ID = env('JN_DASH_XSS_ID');
const SHOTS = env('JN_DASH_SHOTS');

let failed = 0;
const result = {};
function check(cond, what) {
  console.log((cond ? 'ok: ' : 'FAIL: ') + what);
  if (!cond) failed++;
  return cond;
}
// Runs one step; an exception (a timeout waiting for the page) fails it and the run goes on.
async function step(what, fn) {
  try { await fn(); } catch (e) { check(false, what + ': ' + String(e.message || e).split('\n')[0]); }
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'],
});
const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await ctx.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
// The first polls meet 401 before the token is given: the browser logs those, and only those.
page.on('console', (m) => {
  if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push('console: ' + m.text());
});
let dialogs = 0;
await page.exposeFunction('__jnDialogOpened', () => { dialogs++; });

const row = (name) => page.locator(`#channels tr[data-channel="${name}"]`);
const cellInt = async (loc) => parseInt(((await loc.textContent()) || '0').replace(/[^0-9]/g, '') || '0', 10);

await step('overview and token', async () => {
  await page.goto(URL_);
  // The page meets 401 and asks for the token, once, for the tab.
  await page.locator('#token-dialog[open]').waitFor({ timeout: 5000 });
  await page.evaluate(() => {
    new MutationObserver(() => { if (document.querySelector('#token-dialog[open]')) window.__jnDialogOpened(); })
      .observe(document.querySelector('#token-dialog'), { attributes: true });
  });
  await page.fill('#token-input', TOKEN);
  await page.click('#token-form button[type=submit]');
  await page.locator('#token-dialog[open]').waitFor({ state: 'detached', timeout: 3000 });
  check(await page.evaluate(() => sessionStorage.getItem('junction.admin_token')) === TOKEN,
    'the token is kept in sessionStorage');
  for (const c of CHANNELS) {
    await row(c).waitFor({ timeout: 5000 });
    check(await row(c).locator('td.state .state-word').textContent() === 'up', `channel ${c} is shown up`);
  }
  check(await page.locator('#channels tbody tr').count() === CHANNELS.length,
    'the overview has one row per channel of the config');
  check(await page.locator('#routes tr[data-route="r"]').count() === 1 &&
    await page.locator('#routes tr[data-route="hl7json"]').count() === 1, 'routes r and hl7json are shown');
});

await step('counters move', async () => {
  const before = await cellInt(row(IN).locator('td.in'));
  for (let i = 0; i < 20; i++) {
    const r = await fetch(INGEST, { method: 'POST', body: 'counter-' + i, headers: { 'Content-Type': 'text/plain' } });
    if (r.status !== 202) throw new Error('POST ' + i + ': ' + r.status);
  }
  const t0 = Date.now();
  await page.waitForFunction(([sel, want]) => {
    const e = document.querySelector(sel);
    return e && parseInt(e.textContent.replace(/[^0-9]/g, '') || '0', 10) >= want;
  }, [`#channels tr[data-channel="${IN}"] td.in`, before + 20], { timeout: 3000, polling: 100 });
  result.counter_ms = Date.now() - t0;
  check(true, `20 posted messages show in the ${IN} row's counter within 3 s (${result.counter_ms} ms)`);
  // A rate needs two polls that saw traffic; more traffic for the chart and the screenshot.
  for (let i = 0; i < 20; i++) await fetch(INGEST, { method: 'POST', body: 'chart-' + i });
  await page.waitForTimeout(2500);
});

await step('pause and resume', async () => {
  await row(IN).locator('button.pause').click();
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'paused',
    `#channels tr[data-channel="${IN}"] td.state .state-word`, { timeout: 3000 });
  check(true, `${IN} shows paused after its Pause button`);
  const code = execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5',
    '-X', 'POST', '--data-binary', 'while paused', INGEST]).toString();
  check(code === '503', `the paused HTTP IN answers 503 (got ${code})`);
  check(await row(IN).locator('button.pause').textContent() === 'Resume', 'the button now says Resume');
  await page.screenshot({ path: SHOTS + '/dashboard-overview.png' });
  await row(IN).locator('button.pause').click();
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'up',
    `#channels tr[data-channel="${IN}"] td.state .state-word`, { timeout: 3000 });
  check(true, `${IN} shows up again after Resume`);
});

await step('dead letters and replay', async () => {
  await page.goto(URL_ + '#/dead-letters');
  const tr = page.locator(`#dlq-list tr[data-id="${HL7_ID}"]`);
  await tr.waitFor({ timeout: 5000 });
  const reason = await tr.locator('td.reason').textContent();
  check(/400/.test(reason), `the dead letter's reason is shown: ${reason}`);
  // Everything matching: a dry run first, with the count; nothing is replayed by it.
  await page.click('#dlq-replay button.dry-run');
  await page.waitForFunction(() => /would be replayed/.test(document.querySelector('#dlq-replay .replay-out')?.textContent || ''),
    null, { timeout: 5000 });
  check(/^1 would be replayed/.test(await page.locator('#dlq-replay .replay-out').textContent()) &&
    await page.locator('#dlq-replay button.replay-go').textContent() === 'Replay 1',
    'the dry run counts the one dead letter and offers "Replay 1"');
  await tr.locator('button.replay-one').click();
  await page.waitForFunction((id) => /done/.test(document.querySelector(`#dlq-list tr[data-id="${id}"] .replay-out`)?.textContent || ''),
    HL7_ID, { timeout: 10000 });
  check(true, 'its Replay button ran a replay job to done');
  result.replayed = HL7_ID;
  await tr.waitFor({ state: 'detached', timeout: 5000 });
  check(true, 'the replayed dead letter left the list');
});

await step('message browser', async () => {
  await page.goto(URL_ + '#/messages?limit=5');
  await page.locator('#msg-list tbody tr').first().waitFor({ timeout: 5000 });
  check(await page.locator('#msg-list tbody tr').count() === 5, 'a page of 5 messages');
  await page.click('#msg-more');
  await page.waitForFunction(() => document.querySelectorAll('#msg-list tbody tr').length === 10, null, { timeout: 5000 });
  check(true, 'Next page (next_cursor) adds the next 5');
  const ids = await page.locator('#msg-list tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.id));
  check(new Set(ids).size === 10, 'the second page holds other messages');
  // Replay all matching, from the kept messages: dry run, then the job to done.
  await page.fill('#msg-filter [name=q]', 'counter-7');
  await page.click('#msg-filter button[type=submit]');
  await page.waitForFunction(() => /q=counter-7/.test(location.hash), null, { timeout: 3000 });
  await page.selectOption('#msg-replay select[name=from]', 'kept');
  await page.click('#msg-replay button.dry-run');
  await page.waitForFunction(() => /would be replayed/.test(document.querySelector('#msg-replay .replay-out')?.textContent || ''),
    null, { timeout: 5000 });
  check(/^1 would be replayed/.test(await page.locator('#msg-replay .replay-out').textContent()),
    'the dry run of the filter counts 1: ' + await page.locator('#msg-replay .replay-out').textContent());
  await page.click('#msg-replay button.replay-go');
  await page.waitForFunction(() => /1 of 1 replayed.*done/.test(document.querySelector('#msg-replay .replay-out')?.textContent || ''),
    null, { timeout: 10000 });
  check(await page.locator('#msg-replay progress.replay-bar').evaluate((b) => !b.hidden && b.value === b.max),
    'the replay of the filter runs to done, its progress bar full');
  result.kept_replayed = 'counter-7';
  await page.fill('#msg-filter [name=q]', 'PID|');
  await page.fill('#msg-filter [name=limit]', '50');
  await page.click('#msg-filter button[type=submit]');
  await page.waitForFunction(() => /q=PID/.test(location.hash), null, { timeout: 3000 });
  await page.locator(`#msg-list tr[data-id="${HL7_ID}"]`).waitFor({ timeout: 5000 });
  check(await page.locator('#msg-list tbody tr').count() === 1, 'the text filter finds the HL7 message only');
  await page.click(`#msg-list tr[data-id="${HL7_ID}"] a`);
});

await step('HL7 message page', async () => {
  await page.waitForFunction((id) => location.hash === '#/message/' + id, HL7_ID, { timeout: 3000 });
  await page.locator('#m-payload .hl7 .seg').first().waitFor({ timeout: 5000 });
  const lines = (await page.locator('#m-payload').innerText()).split('\n');
  check(lines.some((l) => l.startsWith('PID|')), 'PID starts a line of its own: ' + JSON.stringify(lines));
  check(lines[0].startsWith('MSH|'), 'MSH is the first line');
  check(await page.locator('#m-payload [title="PID-5"]').count() === 1 &&
    await page.locator('#m-payload [title="PID-5.1"]').textContent() === 'Doe', 'PID-5 and PID-5.1 have their positions');
  // The payload after route hl7json's service (hl7-to-json): pretty-printed JSON.
  await page.locator('#m-outputs .output pre.json').waitFor({ timeout: 5000 });
  const js = await page.locator('#m-outputs .output pre.json').textContent();
  check(/after the services of route hl7json/i.test(await page.locator('#m-outputs h3').textContent()) &&
    /^\{\n  "/.test(js) && js.includes('Doe'), 'the output of route hl7json shows as pretty JSON');
  await page.locator('#m-trace li').first().waitFor({ timeout: 3000 });
  const trace = await page.locator('#m-trace').innerText();
  check(/received/.test(trace) && /dead/.test(trace) && /replayed/.test(trace), 'the trace has received, dead-lettered, replayed');
  // The replay's delivery may land after the page was drawn: reload until the trace has it.
  for (let i = 0; i < 10 && !/delivered/.test(await page.locator('#m-trace').innerText()); i++) {
    await page.waitForTimeout(500);
    await page.reload();
    await page.locator('#m-trace li').first().waitFor({ timeout: 3000 });
  }
  check(/delivered/.test(await page.locator('#m-trace').innerText()), 'the trace ends delivered after the replay');
  await page.locator('#m-payload .hl7').waitFor({ timeout: 5000 });
  await page.screenshot({ path: SHOTS + '/dashboard-message.png', fullPage: true });
});

await step('a payload is shown as text, never run', async () => {
  await page.goto(URL_ + '#/message/' + XSS_ID);
  await page.locator('#m-payload pre').waitFor({ timeout: 5000 });
  const text = await page.locator('#m-payload pre').textContent();
  check(text.includes('<img src=x onerror="window.__pwned=1">'), 'the HTML payload shows as text');
  check(await page.locator('#m-payload img').count() === 0, 'no img element was made of it');
  await page.waitForTimeout(300);
  check(await page.evaluate(() => window.__pwned) === undefined, 'window.__pwned is undefined');
  // The raw payload opened in the browser on the admin's origin: sandboxed, no script.
  const raw = await ctx.newPage();
  await raw.setExtraHTTPHeaders({ Authorization: 'Bearer ' + TOKEN });
  const resp = await raw.goto(URL_ + 'api/v1/messages/' + XSS_ID + '/payload');
  check(/sandbox/.test(resp.headers()['content-security-policy'] || ''), 'the raw payload comes with a sandbox CSP');
  await raw.waitForTimeout(300);
  check(await raw.evaluate(() => window.__pwned) === undefined, 'the raw payload page did not run it either');
  await raw.close();
  // The CSP holds: an inline script put into the page does not run.
  const blocked = await page.evaluate(() => new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective), { once: true });
    const s = document.createElement('script');
    s.textContent = 'window.__inline = 1';
    document.body.append(s);
    setTimeout(() => resolve(window.__inline === 1 ? 'ran' : 'no event'), 1000);
  }));
  check(/script-src/.test(blocked), 'an inline script is refused by the CSP (' + blocked + ')');
  problems.splice(0, problems.length, ...problems.filter((p) => !/inline script/i.test(p)));
});

// The OUT that answered 400 once shows that error, with its time, under its state.
await step('last error', async () => {
  await page.goto(URL_);
  const le = page.locator('#channels tr[data-channel="emr"] td.state .last-error');
  await le.waitFor({ timeout: 5000 });
  const text = await le.textContent();
  check(/400/.test(text) && /\d\d:\d\d:\d\dZ/.test(text), `emr shows its last error: ${text}`);
});

// A phone's width: the page itself does not scroll sideways (wide tables scroll in their box).
await step('phone width', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  for (const where of ['', '#/messages?limit=5', '#/dead-letters']) {
    await page.goto(URL_ + where);
    await page.waitForTimeout(700);
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    check(w <= 392, `at 390 px the page ${where || '(overview)'} is ${w} px wide`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
});

check(dialogs === 0, `the token was asked for once (asked again ${dialogs} times)`);
check(problems.length === 0, 'no page error or CSP violation: ' + JSON.stringify(problems));
await browser.close();
console.log(JSON.stringify(result));
process.exit(failed ? 1 : 0);

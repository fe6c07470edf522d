// End-to-end check in a real VS Code (code-server, started by test.sh) driven by headless
// Chromium: the status bar reaches "ready", typing in a Python file brings ghost text, Esc
// dismisses it, asking again brings it back, Tab accepts it, and the saved file is exactly the
// original text, then the typed text, then the ghost text as read from the DOM.
//
// Reads its inputs from the environment (test.sh sets them):
//   E2E_URL        the code-server address, with ?folder= the workspace
//   E2E_FILE       the Python file in the workspace to open and type into
//   E2E_TYPED      what to type at the end of the file
//   E2E_ARTIFACTS  where screenshots go
//   E2E_CHROMIUM   the Chromium executable (default /usr/bin/chromium)
//   E2E_TIMEOUT_S  the longest wait for one step (default 60)

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { chromium } from 'playwright-core';

const need = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

const url = need('E2E_URL');
const file = need('E2E_FILE');
const typed = need('E2E_TYPED');
const artifacts = need('E2E_ARTIFACTS');
const stepTimeout = Number(process.env.E2E_TIMEOUT_S ?? '60') * 1000;
mkdirSync(artifacts, { recursive: true });

const started = Date.now();
const log = (message) => console.log(`[e2e ${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`);

/** Monaco draws spaces as no-break spaces. */
const plain = (text) => text.replace(/\u00a0/g, ' ');

const original = readFileSync(file, 'utf8');
// A fresh profile each run, so nothing of an earlier run (or of a person's browser) leaks in.
const profile = mkdtempSync(join(tmpdir(), 'pyfill-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.E2E_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

let page;
let failed = false;
try {
  page = browser.pages()[0] ?? (await browser.newPage());
  page.setDefaultTimeout(stepTimeout);

  log(`opening ${url}`);
  await page.goto(url);
  await page.locator('.monaco-workbench').waitFor();
  await page.locator('.statusbar').waitFor();

  log(`opening ${basename(file)} with Quick Open`);
  await openFile(basename(file));
  const editor = page.locator('.editor-instance .monaco-editor').first();
  await editor.waitFor();

  // The extension activates on the Python file; its status bar item must reach "ready" before
  // typing, since a request made while the model loads is answered with nothing.
  log('waiting for the status bar item to say ready');
  await waitForReady();

  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+End');
  log(`typing ${JSON.stringify(typed)}`);
  await page.keyboard.type(typed, { delay: 60 });

  log('waiting for ghost text');
  const first = await waitForGhostText();
  log(`ghost text: ${JSON.stringify(first)}`);
  await page.screenshot({ path: join(artifacts, 'ghost-text.png') });

  log('Esc dismisses it');
  await page.keyboard.press('Escape');
  await page.locator('.ghost-text-decoration').first().waitFor({ state: 'detached', timeout: 10_000 })
    .catch(() => { throw new Error('Esc did not dismiss the ghost text'); });

  log('asking again (Trigger Inline Suggestion)');
  await triggerInlineSuggestion();
  const ghost = await waitForGhostText();
  if (ghost !== first) {
    log(`the second suggestion differs: ${JSON.stringify(ghost)}`);
  }

  await page.keyboard.press('Tab');
  await page.locator('.ghost-text-decoration').first().waitFor({ state: 'detached', timeout: 10_000 })
    .catch(() => log('ghost text still drawn after Tab (a new suggestion may have followed)'));
  await page.keyboard.press('Control+S');
  await page.locator('.tab.active.dirty').waitFor({ state: 'detached', timeout: 10_000 })
    .catch(() => { throw new Error('Ctrl+S did not save the file (its tab still looks modified)'); });
  await page.waitForTimeout(500);
  await page.screenshot({ path: join(artifacts, 'accepted.png') });

  const saved = readFileSync(file, 'utf8');
  const expected = original + typed + ghost;
  if (saved !== expected) {
    throw new Error(
      'after Tab and save, the file is not the original text + the typed text + the ghost text\n' +
        `---- expected:\n${expected}\n---- file on disk:\n${saved}\n----`,
    );
  }
  log(`PASS: Tab inserted ${JSON.stringify(ghost)} after ${JSON.stringify(typed)}`);
} catch (error) {
  failed = true;
  console.error(`[e2e] FAIL: ${error instanceof Error ? error.message : error}`);
  if (page) {
    await page.screenshot({ path: join(artifacts, 'failure.png') }).catch(() => undefined);
    const status = await statusBarLabels().catch(() => []);
    console.error(`[e2e] status bar: ${JSON.stringify(status)}`);
    const notifications = await page.locator('.notifications-toasts .notification-list-item-message')
      .allInnerTexts().catch(() => []);
    if (notifications.length > 0) {
      console.error(`[e2e] notifications: ${JSON.stringify(notifications)}`);
    }
  }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
log(`screenshots in ${artifacts}`);
process.exit(failed ? 1 : 0);

async function openFile(name) {
  await page.locator('.monaco-workbench').click({ position: { x: 700, y: 400 } }).catch(() => undefined);
  await page.keyboard.press('Control+P');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor();
  await input.fill(name);
  await page.locator('.quick-input-list .monaco-list-row').first().waitFor();
  await page.keyboard.press('Enter');
  await page.locator(`.tab[data-resource-name="${name}"]`).waitFor();
}

/** The extension's status bar item (its id is the extension's id, then the item's). */
/** The command behind Alt+\, run from the command palette (no keyboard layout involved). */
async function triggerInlineSuggestion() {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor();
  await input.fill('>Trigger Inline Suggestion');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Trigger Inline Suggestion' }).first().waitFor();
  await page.keyboard.press('Enter');
  await input.waitFor({ state: 'hidden' });
}

async function statusBarLabels() {
  return page.locator('[id="pyfill.pyfill.pyfill.status"]').evaluateAll((nodes) =>
    nodes.map((n) => n.getAttribute('aria-label') ?? n.textContent ?? ''));
}

async function waitForReady() {
  const deadline = Date.now() + 3 * stepTimeout;
  let last = '';
  while (Date.now() < deadline) {
    const labels = await statusBarLabels();
    const now = labels.join(' | ');
    if (now !== last) {
      log(`status bar: ${now || '(no pyfill item yet)'}`);
      last = now;
    }
    if (labels.some((l) => l.includes('pyfill: ready'))) {
      return;
    }
    if (labels.some((l) => l.includes('pyfill: error') || l.includes('pyfill: stopped'))) {
      throw new Error(`the status bar says ${now}`);
    }
    await page.waitForTimeout(250);
  }
  throw new Error(`the status bar never said "pyfill: ready" (last: ${last || 'no pyfill item'})`);
}

/** The ghost text as it would be inserted: its lines joined with newlines. */
async function waitForGhostText() {
  const ghostParts = page.locator('.ghost-text-decoration, .ghost-text-decoration-preview');
  try {
    await ghostParts.first().waitFor({ state: 'visible', timeout: stepTimeout });
  } catch {
    log('no ghost text yet; triggering an inline suggestion explicitly');
    await triggerInlineSuggestion();
    await ghostParts.first().waitFor({ state: 'visible', timeout: stepTimeout }).catch(() => {
      throw new Error(`no ghost text appeared within ${(2 * stepTimeout) / 1000} s of typing`);
    });
  }
  // A newer answer may still replace the one drawn: read until two reads agree.
  let text = await ghostText();
  for (let i = 0; i < 20; i++) {
    await page.waitForTimeout(400);
    const again = await ghostText();
    if (again === text && text.length > 0) {
      return text;
    }
    text = again;
  }
  throw new Error(`the ghost text did not settle (last read ${JSON.stringify(text)})`);
}

async function ghostText() {
  return page.evaluate(() => {
    const editorNode = document.querySelector('.editor-instance .monaco-editor');
    // The rest of the cursor's line is drawn inline; the lines after it in a view zone below.
    const inline = [...editorNode.querySelectorAll('.view-line .ghost-text-decoration')]
      .map((n) => n.textContent ?? '')
      .join('');
    const block = [...editorNode.querySelectorAll('.view-zones .suggest-preview-text .view-line')]
      .sort((a, b) => parseFloat(a.style.top || '0') - parseFloat(b.style.top || '0'))
      .map((n) => n.textContent ?? '');
    return [inline, ...block].join('\n');
  }).then(plain);
}

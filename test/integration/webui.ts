/**
 * What the integration tests that look at the Temporal Web UI (UI 2.42.1 embedded in the dev
 * server) share: a headless Debian chromium through playwright-core, reading the text the
 * UI renders (markdown in frames), and waiting for a condition.
 */
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import type { Page } from 'playwright-core';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Poll `f` every 300 ms until it returns a value; fail naming `what` after `ms`. */
export async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 300_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(300);
  }
}

/** The Web UI's address (the dev server the test harness started). */
export const webUi = () => `http://127.0.0.1:${process.env.E3_TEMPORAL_UI_PORT}`;

/** Headless chromium (the system's), without the background traffic a test does not need. */
export const launchBrowser = () =>
  chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-gpu',
      '--disable-sync',
    ],
  });

/** Wait until some frame of the page shows text matching `re` (the Web UI renders markdown in frames); returns that text. */
export async function frameText(page: Page, re: RegExp, ms = 60_000): Promise<string> {
  const end = Date.now() + ms;
  let seen: string[] = [];
  while (Date.now() < end) {
    seen = await Promise.all(
      page
        .frames()
        .map((f) =>
          f
            .evaluate(() => (globalThis as unknown as { document: { body?: { innerText: string } } }).document.body?.innerText ?? '')
            .catch(() => ''),
        ),
    );
    const hit = seen.find((t) => re.test(t));
    if (hit !== undefined) return hit;
    await sleep(500);
  }
  assert.fail(`no frame shows ${re}; frames: ${JSON.stringify(seen.map((t) => t.slice(0, 300)))}`);
}

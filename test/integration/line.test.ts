/**
 * A waiting node's place in line, in the Web UI (workers/line.ts, workflows/session.ts): with
 * the only trainer slot held by a paused node and two more runs waiting, each waiting node's
 * page (UI 2.42.1 embedded in the dev server, headless Debian chromium through playwright-core)
 * shows how many opens are ahead of it and who holds the trainer, and the count goes down when
 * the line moves (the run ahead of it is cancelled). A screenshot of the page is kept under the
 * test data dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import type { Client } from '@temporalio/client';
import { TASK_QUEUE } from '../../activities/types';
import { trainerQueue, trainingNodes } from '../../cli/trainers';
import { dataDir } from '../../storage/store';
import { client, inProcessWorker, pauseOnceStarted, uid } from './env';
import { frameText, launchBrowser, until, webUi } from './webui';

const waiting = async (c: Client, id: string) =>
  trainerQueue(await trainingNodes(c)).waiting.some((x) => x.workflowId === `${id}/warmstart`) ? true : undefined;

test('a waiting node shows its place in line and the holder in the Web UI, kept up to date', { timeout: 10 * 60_000 }, async () => {
  const ui = webUi();
  const w = await inProcessWorker();
  const { client: c, close } = await client();
  const ids = { holder: uid('line-a'), b: uid('line-b'), c: uid('line-c') };
  const start = (id: string) =>
    c.workflow.start('pipeline', { taskQueue: TASK_QUEUE, workflowId: id, args: [{ config: 'tiny', runId: id }] });
  let browser: Browser | undefined;
  try {
    await start(ids.holder);
    await pauseOnceStarted(c, `${ids.holder}/warmstart`);
    await until('the holder to open its session', async () =>
      trainerQueue(await trainingNodes(c)).holders.some((h) => h.workflowId === `${ids.holder}/warmstart`) ? true : undefined,
    );
    for (const id of [ids.b, ids.c]) {
      await start(id);
      await until(`${id} to wait`, () => waiting(c, id));
    }

    browser = await launchBrowser();
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(60_000);
    const open = async (workflowId: string) => {
      // A running workflow's page keeps polling: it never reaches network idle.
      await page.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(workflowId)}`, { waitUntil: 'load', timeout: 120_000 });
      await page.getByText('User Metadata').first().click();
    };
    const holder = `Trainer held by: ${ids.holder}/warmstart`;
    await open(`${ids.c}/warmstart`);
    const shown = await frameText(
      page,
      new RegExp(`waiting for a trainer: 1 ahead of it \\(run ${ids.c}, node warmstart, since \\d\\d:\\d\\d:\\d\\d UTC\\)`),
    );
    assert.ok(shown.includes(holder), `the page names the holder: ${shown}`);
    const shot = path.join(dataDir(), 'screenshots', 'waiting-node.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 0, `${shot} is not empty`);

    await open(`${ids.b}/warmstart`);
    await frameText(page, new RegExp(`waiting for a trainer: 0 ahead of it \\(run ${ids.b}, node warmstart`));

    // The line moves: the run ahead of c is cancelled, and c's page (reloaded) says it is next.
    await c.workflow.getHandle(ids.b).cancel();
    await open(`${ids.c}/warmstart`);
    await frameText(page, new RegExp(`waiting for a trainer: 0 ahead of it \\(run ${ids.c}, node warmstart`));
    // The place went from 1 to 0 by signals sent on changes only.
    const signals = ((await c.workflow.getHandle(`${ids.c}/warmstart`).fetchHistory()).events ?? []).filter(
      (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'trainerLine',
    );
    assert.ok(signals.length >= 2 && signals.length <= 4, `trainerLine signals to the waiter: ${signals.length}`);
    await page.screenshot({ path: path.join(dataDir(), 'screenshots', 'waiting-node-next.png'), fullPage: true });

    // Once the holder resumes, c gets the trainer and its details become its progress.
    await c.workflow.getHandle(`${ids.holder}/warmstart`).signal('resume');
    await until('c to leave the line', async () => ((await waiting(c, ids.c)) ? undefined : true));
    // Its open trains the first commit window before it returns (meanwhile the announcer says
    // it is opening); a page loaded then may keep those details, so load it once the open returned.
    await until("c's open to return", async () => {
      const p = await c.workflow
        .getHandle(`${ids.c}/warmstart`)
        .query<{ iteration: number }>('progress')
        .catch(() => undefined);
      return (p?.iteration ?? 0) >= 1 ? true : undefined;
    });
    await open(`${ids.c}/warmstart`);
    await frameText(page, /warmstart \(sft\) — step \d+ of \d+/, 300_000);
  } finally {
    await browser?.close().catch(() => {});
    for (const id of Object.values(ids))
      await c.workflow
        .getHandle(id)
        .cancel()
        .catch(() => undefined);
    await close();
    await w.stop();
  }
});

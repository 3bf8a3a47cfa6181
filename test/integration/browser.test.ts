/**
 * A run started the way a user starts one: in the Temporal Web UI's "Start Workflow" form
 * (UI 2.42.1 embedded in the dev server), driven by headless Debian chromium through
 * playwright-core. The form needs no extra server flag (startWorkflowDisabled is false by
 * default). What a user enters: Workflow ID (anything unique), Task Queue `e3`, Workflow
 * Type `pipeline`, Input data `{"config":"tiny"}` with encoding json/plain. Then the run's
 * report page is opened from disk the way a user opens it: its vega-rendered SVG charts
 * are laid out with a size, the extrapolation chart has a point per measured budget and
 * the training budgets as labelled rules, and the page fetches nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import { TASK_QUEUE } from '../../activities/types';
import type { PipelineResult } from '../../workflows/pipeline';
import { E3Config } from '../../workflows/search';
import { client, inProcessWorker, pauseOnceStarted, store, uid } from './env';
import { frameText, launchBrowser, webUi } from './webui';

const NODES = ['warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'];

const INPUT = '{"config":"tiny"}';
/** configs/tiny.json: the select node's measured budgets (grid and 2 x its largest) and the eval budgets (one point each on pass@1 vs budget). */
const TINY_POINTS = 3 + 3;

test('a tiny run started from the Web UI "Start Workflow" form completes with the whole DAG', { timeout: 420_000 }, async () => {
  const ui = webUi();
  const id = uid('ui-tiny');
  const w = await inProcessWorker();
  let browser: Browser | undefined;
  const c = await client();
  try {
    browser = await launchBrowser();
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(60_000);

    // The workflow list has a "Start Workflow" button that opens the form.
    await page.goto(`${ui}/namespaces/default/workflows`, { waitUntil: 'networkidle', timeout: 120_000 });
    await page.getByRole('button', { name: 'Start Workflow' }).click();
    await page.waitForURL(/\/namespaces\/default\/workflows\/start-workflow/);

    await page.getByTestId('workflowId').fill(id);
    await page.getByTestId('taskQueue').fill(TASK_QUEUE);
    await page.getByTestId('workflowType').fill('pipeline');
    // Input data is a CodeMirror editor: type into it like a user would.
    const editor = page.locator('.cm-content[data-language="json"]');
    await editor.click();
    await page.keyboard.type(INPUT);
    assert.deepEqual(JSON.parse(await editor.innerText()), { config: 'tiny' });
    // Leave the editor before pressing the button: on blur it re-formats the JSON over three
    // lines, which moves the button, so a click straight from the editor can miss it.
    await page.getByTestId('workflowType').click();
    await editor.locator('.cm-line').nth(2).waitFor();
    assert.deepEqual(JSON.parse(await editor.innerText()), { config: 'tiny' });

    const button = page.getByTestId('start-workflow-button');
    assert.equal(await button.isEnabled(), true, 'Start Workflow is enabled once the required fields are filled');
    const started = page.waitForResponse(
      (r) => r.request().method() === 'POST' && r.url().includes(`/api/v1/namespaces/default/workflows/${encodeURIComponent(id)}`),
    );
    await button.click();
    const res = await started;
    assert.equal(res.status(), 200, await res.text());
    const sent = res.request().postDataJSON() as {
      taskQueue: { name: string };
      workflowType: { name: string };
      input: { payloads: { data: string }[] };
    };
    assert.equal(sent.taskQueue.name, TASK_QUEUE);
    assert.equal(sent.workflowType.name, 'pipeline');
    assert.deepEqual(JSON.parse(Buffer.from(sent.input.payloads[0].data, 'base64').toString('utf8')), { config: 'tiny' });
    await page.getByText('Workflow started successfully').waitFor();
    await browser.close();
    browser = undefined;

    // The run the UI started is an ordinary pipeline run: the worker takes it to completion.
    const h = c.client.workflow.getHandle(id);
    const r = (await h.result()) as PipelineResult;
    assert.equal(r.runId, id);
    assert.deepEqual(Object.keys(r.results).sort(), [...NODES].sort());
    assert.deepEqual(r.skipped, []);
    assert.ok(r.report?.key, 'the report node produced a report');
    const d = await h.describe();
    assert.equal(d.status.name, 'COMPLETED');
    assert.equal(d.type, 'pipeline');
    assert.equal(d.taskQueue, TASK_QUEUE);
    assert.equal(d.typedSearchAttributes.get(E3Config), 'tiny');

    // The run's pages tell the story. Each node workflow has a one-line summary; its activities
    // say what they do; and while a node runs, its live details (markdown) say where it is.
    browser = await launchBrowser();
    const ui2 = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    ui2.setDefaultTimeout(60_000);
    await ui2.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(`${id}/stage1`)}`, {
      waitUntil: 'networkidle',
      timeout: 120_000,
    });
    await ui2.getByText(`tiny · stage1 (rl) · seed 7 · run ${id}`).first().waitFor({ state: 'visible' });
    const scheduled = ((await c.client.workflow.getHandle(`${id}/stage1`).fetchHistory()).events ?? []).filter(
      (e) => e.activityTaskScheduledEventAttributes,
    );
    const summaries = scheduled.map((e) =>
      e.userMetadata?.summary?.data ? JSON.parse(Buffer.from(e.userMetadata.summary.data).toString('utf8')) : undefined,
    );
    assert.ok(
      summaries.includes('open trainer session, then train to its first commit (waits in e3-trainer for a free trainer)') &&
        summaries.includes('iterations 2→4 B=32, commit 4, close session'),
      `activity summaries: ${summaries.join(', ')}`,
    );
    // A paused stage shows its progress live.
    const live = uid('ui-live');
    const h2 = await c.client.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: live,
      args: [{ config: 'tiny', overrides: { nodes: { stage1: { iterations: 30, ckptEvery: 10 } } } }],
    });
    const stage = c.client.workflow.getHandle(`${live}/stage1`);
    // Paused as soon as it exists: it holds at its first commit (10), mid-stage.
    await pauseOnceStarted(c.client, `${live}/stage1`);
    // A running workflow's page keeps polling: it never reaches network idle.
    await ui2.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(`${live}/stage1`)}`, { waitUntil: 'load', timeout: 120_000 });
    await ui2.getByText('User Metadata').first().click();
    // The UI renders a workflow's markdown (summary, details) in frames of its own.
    await frameText(ui2, /stage1 \(rl\) — iteration \d+ of 30 · budget 32 tokens · paused/);
    await frameText(ui2, /marks true/);
    await ui2.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(live)}`, { waitUntil: 'load', timeout: 120_000 });
    await ui2.getByText('User Metadata').first().click();
    await frameText(ui2, /config tiny, seed 7: 1 of 6 nodes done[\s\S]*warmstart\s+sft\s+done\s+step 12[\s\S]*stage1\s+rl\s+running/);
    // A user's first reflex: "Request Cancellation" on the run's page cancels the run and
    // the node it was running, which frees its trainer session.
    await ui2.getByRole('button', { name: 'Request Cancellation' }).click();
    const dialog = ui2.getByRole('dialog');
    await dialog
      .getByRole('button', { name: /Confirm|Request Cancellation|Yes/ })
      .last()
      .click();
    for (let k = 0; k < 300 && (await h2.describe()).status.name === 'RUNNING'; k++) await new Promise((r) => setTimeout(r, 200));
    assert.equal((await h2.describe()).status.name, 'CANCELLED');
    for (let k = 0; k < 300 && (await stage.describe()).status.name === 'RUNNING'; k++) await new Promise((r) => setTimeout(r, 200));
    assert.equal((await stage.describe()).status.name, 'CANCELLED');
    const closed = ((await stage.fetchHistory()).events ?? []).some(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'closeTrainer',
    );
    assert.ok(closed, 'the cancelled stage closed its trainer session');
    await browser.close();
    browser = undefined;

    // The report page, opened from disk: one self-contained file with the charts inline.
    const file = path.resolve(r.report!.path);
    assert.ok(
      await store().exists(r.report!.key.replace(/index\.html$/, 'extrapolation.svg')),
      'report/extrapolation.svg is stored next to the page',
    );
    browser = await launchBrowser();
    const report = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const fetched: string[] = [];
    report.on('request', (q) => {
      if (!q.url().startsWith('file:')) fetched.push(q.url());
    });
    const errors: string[] = [];
    report.on('pageerror', (e) => errors.push(String(e)));
    await report.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    assert.equal(await report.title(), `e3 report ${id}`);
    const charts = report.locator('figure.chart > svg');
    const n = await charts.count();
    assert.ok(n >= 6, `the tiny run draws extrapolation, exploration and training charts (got ${n})`);
    for (let i = 0; i < n; i++) {
      const svg = charts.nth(i);
      assert.ok(await svg.isVisible(), `chart ${i} is visible`);
      const box = await svg.boundingBox();
      assert.ok(box && box.width > 100 && box.height > 100, `chart ${i} is laid out with a size (${JSON.stringify(box)})`);
    }
    for (const name of ['extrapolation', 'extrapolation-passk', 'train-reward_mean', 'sft-loss'])
      assert.equal(await report.locator(`#chart-${name} > svg`).count(), 1, `chart ${name}`);
    const ex = report.locator('#chart-extrapolation > svg');
    await ex.locator('text', { hasText: 'Extrapolation: pass@1 vs test budget' }).waitFor({ state: 'visible' });
    const points = ex.locator('[aria-roledescription="point"]');
    assert.equal(await points.count(), TINY_POINTS, 'a point per (eval / select node, budget)');
    const pbox = await points.first().boundingBox();
    assert.ok(pbox && pbox.width > 0 && pbox.height > 0, 'points are drawn');
    await ex.locator('text', { hasText: 'stage1: B=32' }).waitFor({ state: 'visible' });
    await ex.locator('text', { hasText: /^stage2: B=\d+$/ }).waitFor({ state: 'visible' });
    assert.deepEqual(fetched, [], 'the report fetches nothing');
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close().catch(() => {});
    await c.close();
    await w.stop();
  }
});

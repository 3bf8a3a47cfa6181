/**
 * What test/cluster/faults.ts measures: the longest time without an activity completing,
 * among the gaps that overlap a fault's window, and the connections a toxic met in
 * toxiproxy's log (each checked against values worked out by hand).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectionEvents, longestStall } from '../cluster/faults';

test('longestStall: the longest gap between completions that overlaps the window', () => {
  const done = [0, 1000, 2000, 9000, 9500, 20000];
  // Window [2500, 3000]: only the 2000 -> 9000 gap overlaps it.
  assert.equal(longestStall(done, 2500, 3000), 7000);
  // Window [500, 9200]: gaps 0->1000 (starts before, ends inside), 1000->2000, 2000->9000, 9000->9500.
  assert.equal(longestStall(done, 500, 9200), 7000);
  // Window [9600, 9700]: 9500 -> 20000.
  assert.equal(longestStall(done, 9600, 9700), 10500);
  // A window after the last completion: no gap ends after it.
  assert.equal(longestStall(done, 21000, 22000), 0);
  // No completion before the window: the gap is measured from the window's start.
  assert.equal(longestStall([5000, 6000], 1000, 2000), 4000);
});

test('connectionEvents: accepted and terminated connections of the named proxies only', () => {
  const log = [
    '{"level":"info","name":"r0-s3","client":"10.233.5.11:4000","message":"Accepted client"}',
    '{"level":"warn","name":"r0-s3","bytes":12,"error":"read: connection reset by peer","message":"Source terminated"}',
    '{"level":"info","name":"r0-temporal","client":"10.233.5.11:4001","message":"Accepted client"}',
    '{"level":"info","name":"t0-s3","message":"Started proxy"}',
    '',
  ].join('\n');
  assert.equal(connectionEvents(log, new Set(['r0-s3', 't0-s3'])), 2);
  assert.equal(connectionEvents(log, new Set(['r0-temporal'])), 1);
  assert.equal(connectionEvents(log, new Set(['t1-s3'])), 0);
});

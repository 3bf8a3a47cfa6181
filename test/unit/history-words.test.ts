import { test } from 'node:test';
import assert from 'node:assert/strict';
import { historyRefs } from '../history-words';

// Built from parts, so this file does not trip the check itself.
const word = (w: string, n: string, sep = ' ') => [w, n].join(sep);

test('history-words lint: "session N" in any case and across a line break is flagged; the trainer session is not', () => {
  assert.deepEqual(historyRefs(`a\nran in ${word('session', '7')} on\n`), [{ line: 2, text: `ran in ${word('session', '7')} on` }]);
  assert.equal(historyRefs(word('Session', '9:')).length, 1);
  assert.equal(historyRefs(word('SESSIONS', '3')).length, 1);
  assert.equal(historyRefs(`see the ${word('session', '12', '\n')}`).length, 1);
  assert.equal(historyRefs('the trainer session opens at step 0; 5 sessions on 2 cores; session-1 is a run id').length, 0);
});

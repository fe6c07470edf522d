import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Event, Status, Tracker, initial, mentionsModelFetch, next, parseServerStatus, view } from '../src/status';

const run = (events: Event[], from: Tracker = initial(true)): Tracker => events.reduce(next, from);
const statusAfter = (events: Event[], from?: Tracker): Status => run(events, from).status;

const MISSING =
  'pyfill: no model at /root/.cache/pyfill/models/m.gguf: run `pyfill model fetch`, or set the `model` setting to a GGUF file';

test('the server status drives the state: loading with a percentage, then ready', () => {
  const t = run([
    { type: 'clientStarting' },
    { type: 'serverStatus', params: { state: 'loading', message: 'loading /m.gguf', percentage: 42 } },
  ]);
  assert.deepEqual(t.status, { kind: 'loading', message: 'loading /m.gguf', percentage: 42 });
  assert.equal(t.serverSpeaks, true);
  assert.deepEqual(view(t.status), {
    text: '$(sync~spin) pyfill 42%',
    tooltip: 'pyfill: loading /m.gguf (42%)',
    label: 'pyfill: loading 42%',
    command: 'pyfill.showLogs',
    alarm: undefined,
  });
  const ready = next(t, { type: 'serverStatus', params: { state: 'ready', message: 'model ready: /m.gguf' } });
  assert.equal(view(ready.status).label, 'pyfill: ready');
  assert.equal(view(ready.status).text, '$(check) pyfill');
});

test('a missing model is an error that offers the fetch, whether flagged or only said', () => {
  const flagged = statusAfter([{ type: 'serverStatus', params: { state: 'error', message: MISSING, modelMissing: true } }]);
  assert.deepEqual(flagged, {
    kind: 'error',
    message: MISSING.replace(/^pyfill: /, ''),
    modelMissing: true,
  });
  const v = view(flagged);
  assert.equal(v.alarm, 'error');
  assert.equal(v.command, 'pyfill.showLogs');
  assert.match(v.tooltip, /Fetch Model/);
  const said = statusAfter([{ type: 'serverStatus', params: { state: 'error', message: MISSING } }]);
  assert.equal(said.kind === 'error' && said.modelMissing, true);
  const other = statusAfter([{ type: 'serverStatus', params: { state: 'error', message: 'bad GGUF' } }]);
  assert.deepEqual(other, { kind: 'error', message: 'bad GGUF', modelMissing: false });
});

test('percentages are rounded and clamped for display', () => {
  assert.equal(view({ kind: 'loading', message: 'x', percentage: 101.7 }).text, '$(sync~spin) pyfill 100%');
  assert.equal(view({ kind: 'loading', message: 'x', percentage: 33.4 }).label, 'pyfill: loading 33%');
  assert.equal(view({ kind: 'loading', message: 'x' }).label, 'pyfill: loading');
});

test('malformed status notifications are ignored', () => {
  for (const params of [null, 'ready', { state: 'sleeping', message: '' }, {}]) {
    assert.equal(parseServerStatus(params), undefined);
    assert.deepEqual(statusAfter([{ type: 'serverStatus', params }]), { kind: 'starting' });
  }
  assert.deepEqual(parseServerStatus({ state: 'ready', percentage: 'lots', modelMissing: 'yes' }), {
    state: 'ready',
    message: '',
    percentage: undefined,
    modelMissing: false,
  });
});

test('without pyfill/status, $/progress and the first answer are the guide', () => {
  const loading = run([
    { type: 'clientStarting' },
    { type: 'progress', kind: 'begin', message: 'loading /m.gguf' },
    { type: 'progress', kind: 'report', percentage: 30 },
  ]);
  assert.deepEqual(loading.status, { kind: 'loading', message: 'loading /m.gguf', percentage: 30 });
  assert.equal(statusAfter([{ type: 'progress', kind: 'end', message: 'model ready' }], loading).kind, 'ready');
  // A load that failed ends its progress with "failed" and says why in a message.
  const failed = run(
    [
      { type: 'progress', kind: 'end', message: 'failed' },
      { type: 'errorMessage', message: 'pyfill: bad GGUF header' },
    ],
    loading,
  );
  assert.deepEqual(failed.status, { kind: 'error', message: 'bad GGUF header', modelMissing: false });
  // No progress at all (a client without workDoneProgress): a non-empty answer means ready.
  assert.equal(statusAfter([{ type: 'answer', items: 0 }]).kind, 'starting');
  assert.equal(statusAfter([{ type: 'answer', items: 1 }]).kind, 'ready');
  assert.deepEqual(statusAfter([{ type: 'errorMessage', message: MISSING }]), {
    kind: 'error',
    message: MISSING.replace(/^pyfill: /, ''),
    modelMissing: true,
  });
});

test('once the server has spoken, guesses do not override it', () => {
  const t = run([{ type: 'serverStatus', params: { state: 'loading', message: 'loading', percentage: 10 } }]);
  assert.deepEqual(statusAfter([{ type: 'answer', items: 3 }], t), t.status);
  assert.deepEqual(statusAfter([{ type: 'progress', kind: 'end', message: 'done' }], t), t.status);
  // A new server process has not spoken yet.
  const restarted = run([{ type: 'clientStopped', message: 'stopped' }, { type: 'clientStarting' }], t);
  assert.equal(restarted.serverSpeaks, false);
  assert.deepEqual(restarted.status, { kind: 'starting' });
});

test('an error message after loading (say, refused settings) leaves the state alone', () => {
  const ready = run([{ type: 'serverStatus', params: { state: 'ready', message: '' } }]);
  assert.equal(statusAfter([{ type: 'errorMessage', message: 'pyfill: invalid settings' }], ready).kind, 'ready');
});

test('turning the setting off shows disabled at once; on again waits for the server', () => {
  const ready = run([{ type: 'serverStatus', params: { state: 'ready', message: '' } }]);
  const off = run([{ type: 'settingEnabled', enabled: false }], ready);
  assert.deepEqual(off.status, { kind: 'disabled' });
  assert.deepEqual(view(off.status), {
    text: '$(circle-slash) pyfill',
    tooltip: 'pyfill: suggestions are off. Click to turn them on.',
    label: 'pyfill: disabled',
    command: 'pyfill.enable',
    alarm: undefined,
  });
  assert.equal(statusAfter([{ type: 'answer', items: 1 }], off).kind, 'disabled');
  assert.equal(statusAfter([{ type: 'settingEnabled', enabled: true }], off).kind, 'starting');
  assert.equal(statusAfter([{ type: 'settingEnabled', enabled: true }], ready).kind, 'ready');
  assert.deepEqual(initial(false).status, { kind: 'disabled' });
});

test('a server that cannot start or stopped is shown as such', () => {
  assert.deepEqual(statusAfter([{ type: 'clientFailed', message: 'the pyfill binary was not found' }]), {
    kind: 'error',
    message: 'the pyfill binary was not found',
    modelMissing: false,
  });
  const stopped = statusAfter([{ type: 'clientStopped', message: 'stopped' }]);
  assert.equal(view(stopped).label, 'pyfill: stopped');
  assert.equal(view(stopped).alarm, 'warning');
  // Progress from a stopped server's last breath does not revive it.
  assert.equal(statusAfter([{ type: 'progress', kind: 'end' }], run([{ type: 'clientStopped', message: 'x' }])).kind, 'stopped');
});

test('mentionsModelFetch recognises the server wording', () => {
  assert.equal(mentionsModelFetch(MISSING), true);
  assert.equal(mentionsModelFetch('pyfill: invalid settings'), false);
});

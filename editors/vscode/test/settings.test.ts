import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { CLIENT_KEYS, SECTION, SERVER_KEYS, expandHome, toServerSettings } from '../src/settings';

const HOME = '/home/ada';

/** A `read` over a plain object of `pyfill.*` values, as VS Code's configuration would give. */
const reader = (values: Record<string, unknown>) => (key: string) => values[key];

test('only the server keys are sent; client-only keys stay behind', () => {
  const { settings, problems } = toServerSettings(
    reader({ path: '/opt/pyfill', 'trace.server': 'verbose', enable: true, maxTokens: 32, unknownKey: 1 }),
    HOME,
  );
  assert.deepEqual(settings, { enable: true, maxTokens: 32 });
  assert.deepEqual(problems, []);
});

test('the defaults VS Code reports go through as they are', () => {
  const defaults = {
    enable: true,
    model: null,
    maxTokens: 64,
    prefixTokens: 1024,
    suffixTokens: 256,
    relatedTokens: 384,
    promptFormat: 'auto',
    blockPrompt: 'auto',
    timeoutMs: 10000,
    logLevel: null,
    threads: null,
  };
  const { settings, problems } = toServerSettings(reader(defaults), HOME);
  assert.deepEqual(settings, defaults);
  assert.deepEqual(problems, []);
});

test('an empty model path or log level means the default (null)', () => {
  const { settings } = toServerSettings(reader({ model: '', logLevel: '' }), HOME);
  assert.deepEqual(settings, { model: null, logLevel: null });
});

test('a model path under ~ is expanded, since the server takes it literally', () => {
  const { settings } = toServerSettings(reader({ model: '~/models/coder.gguf' }), HOME);
  assert.equal(settings.model, '/home/ada/models/coder.gguf');
  assert.equal(toServerSettings(reader({ model: '/abs/m.gguf' }), HOME).settings.model, '/abs/m.gguf');
});

test('values of the wrong type are left out and reported, not sent to spoil the update', () => {
  const { settings, problems } = toServerSettings(
    reader({ maxTokens: '64', threads: 2.5, enable: 'yes', promptFormat: '', timeoutMs: -1, suffixTokens: 0 }),
    HOME,
  );
  assert.deepEqual(settings, { suffixTokens: 0 });
  assert.equal(problems.length, 5);
  assert.match(problems[0], /^pyfill\.enable: expected true or false, got "yes"/);
  assert.ok(problems.some((p) => p.startsWith('pyfill.threads: expected a whole number or null, got 2.5')));
});

test('expandHome touches only a leading ~', () => {
  assert.equal(expandHome('~', HOME), HOME);
  assert.equal(expandHome('~/x', HOME + '/'), '/home/ada/x');
  assert.equal(expandHome('a/~/x', HOME), 'a/~/x');
  assert.equal(expandHome('~bob/x', HOME), '~bob/x');
});

test('package.json contributes exactly the server keys and the client-only keys', () => {
  const manifest = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
  const properties: Record<string, { default: unknown }> = manifest.contributes.configuration.properties;
  const contributed = Object.keys(properties).map((k) => k.slice(SECTION.length + 1)).sort();
  assert.deepEqual(contributed, [...SERVER_KEYS, ...CLIENT_KEYS].sort());
  // Each default is a value the mapping sends as it is (the server's own default).
  const defaults = Object.fromEntries(SERVER_KEYS.map((k) => [k, properties[`${SECTION}.${k}`].default]));
  assert.deepEqual(toServerSettings(reader(defaults), HOME), { settings: defaults, problems: [] });
});

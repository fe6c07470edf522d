import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Lookup, findBinary } from '../src/binary';

/** A lookup where exactly `files` are executable. */
const lookup = (files: string[], overrides: Partial<Lookup> = {}): Lookup => ({
  configured: 'pyfill',
  pathEnv: '/usr/local/bin:/usr/bin',
  home: '/home/ada',
  platform: 'linux',
  isExecutable: (file) => files.includes(file),
  ...overrides,
});

test('a command name is searched on PATH in order', () => {
  assert.deepEqual(findBinary(lookup(['/usr/bin/pyfill', '/usr/local/bin/pyfill'])), {
    ok: true,
    path: '/usr/local/bin/pyfill',
  });
});

test("cargo's bin folder is the last resort for a command name", () => {
  assert.deepEqual(findBinary(lookup(['/home/ada/.cargo/bin/pyfill'])), {
    ok: true,
    path: '/home/ada/.cargo/bin/pyfill',
  });
});

test('an empty setting means the default command', () => {
  assert.deepEqual(findBinary(lookup(['/usr/bin/pyfill'], { configured: '  ' })), { ok: true, path: '/usr/bin/pyfill' });
});

test('a path is used as it is, with ~ expanded and relative paths under the workspace', () => {
  assert.deepEqual(findBinary(lookup(['/opt/pyfill'], { configured: '/opt/pyfill' })), { ok: true, path: '/opt/pyfill' });
  assert.deepEqual(findBinary(lookup(['/home/ada/bin/pyfill'], { configured: '~/bin/pyfill' })), {
    ok: true,
    path: '/home/ada/bin/pyfill',
  });
  assert.deepEqual(
    findBinary(lookup(['/work/repo/target/release/pyfill'], { configured: 'target/release/pyfill', workspaceFolder: '/work/repo' })),
    { ok: true, path: '/work/repo/target/release/pyfill' },
  );
});

test('a path that is not executable is an error naming the setting, with no PATH fallback', () => {
  const found = findBinary(lookup(['/usr/bin/pyfill'], { configured: '/missing/pyfill' }));
  assert.equal(found.ok, false);
  assert.match(!found.ok ? found.message : '', /pyfill\.path is set to \/missing\/pyfill/);
});

test('nothing found says where it looked and what to do', () => {
  const found = findBinary(lookup([]));
  assert.equal(found.ok, false);
  assert.match(!found.ok ? found.message : '', /cannot find the pyfill executable on PATH or in ~\/\.cargo\/bin.*pyfill\.path/);
});

test('on Windows, PATH is split on ; and .exe is tried', () => {
  const found = findBinary(
    lookup(['C:\\tools\\pyfill.exe'], { platform: 'win32', pathEnv: 'C:\\Windows;C:\\tools', home: 'C:\\Users\\ada' }),
  );
  assert.deepEqual(found, { ok: true, path: 'C:\\tools\\pyfill.exe' });
});

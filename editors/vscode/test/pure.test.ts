import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

// The modules the unit tests load must run without VS Code: they may not import it, nor the
// language client (which does).
const PURE = ['settings.ts', 'status.ts', 'binary.ts'];

test('the pure modules import neither vscode nor the language client', () => {
  for (const file of PURE) {
    const source = readFileSync(join(__dirname, '..', '..', 'src', file), 'utf8');
    const imports = [...source.matchAll(/from\s+'([^']+)'/g)].map((m) => m[1]);
    for (const name of imports) {
      assert.ok(name.startsWith('./') || name.startsWith('node:'), `${file} imports ${name}`);
    }
  }
});

// Where the `pyfill` executable is: the `pyfill.path` setting, else a search of PATH, else
// cargo's install folder (VS Code started from a desktop menu often lacks ~/.cargo/bin on its
// PATH). Pure: the file system is reached only through `isExecutable`.

import * as path from 'node:path';

import { expandHome } from './settings';

export interface Lookup {
  /** The `pyfill.path` setting: a command name (`pyfill`) or a path to the executable. */
  configured: string;
  /** The PATH environment variable. */
  pathEnv: string;
  home: string;
  platform: NodeJS.Platform;
  /** The first workspace folder, against which a relative `pyfill.path` is resolved. */
  workspaceFolder?: string;
  isExecutable: (file: string) => boolean;
}

export type Found = { ok: true; path: string } | { ok: false; message: string };

export const DEFAULT_COMMAND = 'pyfill';

export function findBinary(lookup: Lookup): Found {
  const platformPath = lookup.platform === 'win32' ? path.win32 : path.posix;
  const configured = lookup.configured.trim() || DEFAULT_COMMAND;
  const named = expandHome(configured, lookup.home);

  if (named.includes('/') || named.includes(platformPath.sep)) {
    const file = platformPath.isAbsolute(named)
      ? named
      : platformPath.resolve(lookup.workspaceFolder ?? lookup.home, named);
    for (const candidate of withExeSuffix(file, lookup.platform)) {
      if (lookup.isExecutable(candidate)) {
        return { ok: true, path: candidate };
      }
    }
    return {
      ok: false,
      message: `pyfill.path is set to ${configured}, but ${file} is not an executable file`,
    };
  }

  const folders = lookup.pathEnv
    .split(lookup.platform === 'win32' ? ';' : ':')
    .filter((folder) => folder.length > 0);
  folders.push(platformPath.join(lookup.home, '.cargo', 'bin'));
  for (const folder of folders) {
    for (const candidate of withExeSuffix(platformPath.join(folder, named), lookup.platform)) {
      if (lookup.isExecutable(candidate)) {
        return { ok: true, path: candidate };
      }
    }
  }
  return {
    ok: false,
    message:
      `cannot find the ${named} executable on PATH or in ~/.cargo/bin; ` +
      'install it (cargo install --path . in the pyfill repository) or set pyfill.path to the binary',
  };
}

function withExeSuffix(file: string, platform: NodeJS.Platform): string[] {
  if (platform === 'win32' && !file.toLowerCase().endsWith('.exe')) {
    return [file + '.exe', file];
  }
  return [file];
}

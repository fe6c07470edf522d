// The `pyfill.*` settings, split into what the server understands and what only the client
// reads. Pure: values come in through a `read` function, so nothing here touches VS Code.
//
// The server refuses an update that holds an unknown key or a value of the wrong type, and
// keeps its previous settings when it does. So only the keys it knows are sent, and a value of
// the wrong type is left out (and reported) rather than spoiling the whole update.

/** The settings the server reads, as `initializationOptions` and `didChangeConfiguration`. */
export interface ServerSettings {
  enable?: boolean;
  model?: string | null;
  maxTokens?: number;
  prefixTokens?: number;
  suffixTokens?: number;
  relatedTokens?: number;
  promptFormat?: string;
  blockPrompt?: string;
  timeoutMs?: number;
  logLevel?: string | null;
  threads?: number | null;
  backend?: string;
  endpoint?: string | null;
  remoteModel?: string | null;
  apiKeyEnv?: string | null;
  tokenizer?: string | null;
  remoteTimeoutMs?: number;
}

type Kind = 'boolean' | 'count' | 'text' | 'path';

/** Each server key and the kind of value it takes; `nullable` ones accept null (the default). */
const SERVER_FIELDS: Record<keyof ServerSettings, { kind: Kind; nullable: boolean }> = {
  enable: { kind: 'boolean', nullable: false },
  model: { kind: 'path', nullable: true },
  maxTokens: { kind: 'count', nullable: false },
  prefixTokens: { kind: 'count', nullable: false },
  suffixTokens: { kind: 'count', nullable: false },
  relatedTokens: { kind: 'count', nullable: false },
  promptFormat: { kind: 'text', nullable: false },
  blockPrompt: { kind: 'text', nullable: false },
  timeoutMs: { kind: 'count', nullable: false },
  logLevel: { kind: 'text', nullable: true },
  threads: { kind: 'count', nullable: true },
  backend: { kind: 'text', nullable: false },
  endpoint: { kind: 'text', nullable: true },
  remoteModel: { kind: 'text', nullable: true },
  apiKeyEnv: { kind: 'text', nullable: true },
  tokenizer: { kind: 'path', nullable: true },
  remoteTimeoutMs: { kind: 'count', nullable: false },
};

export const SERVER_KEYS = Object.keys(SERVER_FIELDS) as (keyof ServerSettings)[];

/** Settings only the extension reads; never sent (the server would refuse the update). */
export const CLIENT_KEYS = ['path', 'trace.server'] as const;

/** The configuration section, as in `pyfill.maxTokens`. */
export const SECTION = 'pyfill';

export interface Translation {
  settings: ServerSettings;
  /** One line per value left out, for a warning the user can act on. */
  problems: string[];
}

/**
 * The server's settings from the user's: `read(key)` returns the value of `pyfill.<key>`
 * (undefined when unset). A `~/` at the start of the model path is expanded with `home`,
 * since the server takes the path as it is; an empty string means null (the default).
 */
export function toServerSettings(read: (key: string) => unknown, home: string): Translation {
  const settings: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const key of SERVER_KEYS) {
    const { kind, nullable } = SERVER_FIELDS[key];
    let value = read(key);
    if (value === undefined) {
      continue;
    }
    if (nullable && (value === null || value === '')) {
      settings[key] = null;
      continue;
    }
    if (!fits(kind, value)) {
      problems.push(`${SECTION}.${key}: expected ${describe(kind, nullable)}, got ${JSON.stringify(value)}; using the server's default`);
      continue;
    }
    if (kind === 'path') {
      value = expandHome(value as string, home);
    }
    settings[key] = value;
  }
  return { settings: settings as ServerSettings, problems };
}

function fits(kind: Kind, value: unknown): boolean {
  switch (kind) {
    case 'boolean':
      return typeof value === 'boolean';
    case 'count':
      return typeof value === 'number' && Number.isInteger(value) && value >= 0;
    case 'text':
    case 'path':
      return typeof value === 'string' && value.length > 0;
  }
}

function describe(kind: Kind, nullable: boolean): string {
  const base = { boolean: 'true or false', count: 'a whole number', text: 'a string', path: 'a file path' }[kind];
  return nullable ? `${base} or null` : base;
}

/** `~` or `~/rest` with the home directory put in; any other path unchanged. */
export function expandHome(path: string, home: string): string {
  if (path === '~') {
    return home;
  }
  if (path.startsWith('~/')) {
    return home.replace(/\/+$/, '') + path.slice(1);
  }
  return path;
}

// What the status bar says: the server's state, folded from the events that tell about it, and
// how each state looks. Pure: the extension feeds events in and draws the view it gets back.
//
// The server announces its state with the `pyfill/status` notification. Until the first one
// arrives (an older server never sends it), the state is guessed from standard messages: the
// model-loading `$/progress`, an error `window/showMessage` while loading, a non-empty answer.
// Once the server has spoken, only it (and the client's own life) moves the state.

/** Params of the `pyfill/status` notification. */
export interface ServerStatus {
  state: 'loading' | 'ready' | 'disabled' | 'error';
  message: string;
  /** 0-100, while loading. */
  percentage?: number;
  /** The error is that the default model has not been fetched (`pyfill model fetch`). */
  modelMissing?: boolean;
}

/** The notification's method; the server also answers a request of that name with its status. */
export const STATUS_NOTIFICATION = 'pyfill/status';

export type Status =
  | { kind: 'starting' }
  | { kind: 'loading'; message: string; percentage?: number }
  | { kind: 'ready'; message: string }
  | { kind: 'disabled' }
  | { kind: 'error'; message: string; modelMissing: boolean }
  | { kind: 'stopped'; message: string };

export interface Tracker {
  status: Status;
  /** Whether the running server has sent `pyfill/status`: if so, guesses are off. */
  serverSpeaks: boolean;
}

export type Event =
  | { type: 'clientStarting' }
  | { type: 'clientStopped'; message: string }
  | { type: 'clientFailed'; message: string }
  | { type: 'settingEnabled'; enabled: boolean }
  | { type: 'serverStatus'; params: unknown }
  | { type: 'progress'; kind: 'begin' | 'report' | 'end'; message?: string; percentage?: number }
  | { type: 'errorMessage'; message: string }
  | { type: 'answer'; items: number };

export function initial(enabled: boolean): Tracker {
  return { status: enabled ? { kind: 'starting' } : { kind: 'disabled' }, serverSpeaks: false };
}

export function next(tracker: Tracker, event: Event): Tracker {
  const { status, serverSpeaks } = tracker;
  const guess = (s: Status): Tracker => (serverSpeaks ? tracker : { status: s, serverSpeaks });
  switch (event.type) {
    case 'clientStarting':
      // A new server process: it has not spoken yet.
      return { status: { kind: 'starting' }, serverSpeaks: false };
    case 'clientStopped':
      return { status: { kind: 'stopped', message: event.message }, serverSpeaks: false };
    case 'clientFailed':
      return { status: { kind: 'error', message: event.message, modelMissing: false }, serverSpeaks: false };
    case 'settingEnabled':
      // Shown at once; the server confirms (or not) with its own status.
      if (!event.enabled) {
        return { status: { kind: 'disabled' }, serverSpeaks };
      }
      return status.kind === 'disabled' ? { status: { kind: 'starting' }, serverSpeaks } : tracker;
    case 'serverStatus': {
      const parsed = parseServerStatus(event.params);
      return parsed ? { status: fromServer(parsed), serverSpeaks: true } : tracker;
    }
    case 'progress':
      if (status.kind === 'disabled' || status.kind === 'stopped') {
        return tracker;
      }
      if (event.kind === 'end') {
        // The server ends a failed load's progress with "failed"; the error message follows.
        return /fail/i.test(event.message ?? '')
          ? tracker
          : guess({ kind: 'ready', message: event.message ?? 'model loaded' });
      }
      return guess({
        kind: 'loading',
        message: event.message ?? (status.kind === 'loading' ? status.message : 'loading the model'),
        percentage: event.percentage ?? (status.kind === 'loading' ? status.percentage : undefined),
      });
    case 'errorMessage':
      if (status.kind !== 'starting' && status.kind !== 'loading') {
        // A refused settings update or the like: the model is as it was.
        return tracker;
      }
      return guess({
        kind: 'error',
        message: withoutPrefix(event.message),
        modelMissing: mentionsModelFetch(event.message),
      });
    case 'answer':
      return event.items > 0 && status.kind !== 'ready' && status.kind !== 'disabled'
        ? guess({ kind: 'ready', message: 'suggestions are coming' })
        : tracker;
  }
}

/** The notification's params if they are well formed, else undefined (and they are ignored). */
export function parseServerStatus(params: unknown): ServerStatus | undefined {
  if (typeof params !== 'object' || params === null) {
    return undefined;
  }
  const p = params as Record<string, unknown>;
  if (p.state !== 'loading' && p.state !== 'ready' && p.state !== 'disabled' && p.state !== 'error') {
    return undefined;
  }
  return {
    state: p.state,
    message: typeof p.message === 'string' ? p.message : '',
    percentage: typeof p.percentage === 'number' && Number.isFinite(p.percentage) ? p.percentage : undefined,
    modelMissing: p.modelMissing === true,
  };
}

function fromServer(s: ServerStatus): Status {
  switch (s.state) {
    case 'loading':
      return { kind: 'loading', message: withoutPrefix(s.message) || 'loading the model', percentage: s.percentage };
    case 'ready':
      return { kind: 'ready', message: withoutPrefix(s.message) };
    case 'disabled':
      return { kind: 'disabled' };
    case 'error':
      return {
        kind: 'error',
        message: withoutPrefix(s.message) || 'the server reported an error',
        modelMissing: s.modelMissing === true || mentionsModelFetch(s.message),
      };
  }
}

/** The server starts its messages with "pyfill: ", which the status bar already says. */
function withoutPrefix(message: string): string {
  return message.replace(/^pyfill:\s*/, '');
}

/** Whether a message is the server's "no model: run `pyfill model fetch`" error. */
export function mentionsModelFetch(message: string): boolean {
  return /pyfill model fetch/.test(message);
}

/** What the status bar item shows. `command` names one of the extension's commands. */
export interface View {
  text: string;
  tooltip: string;
  /** Read by screen readers, and what the end-to-end test looks for. */
  label: string;
  command: 'pyfill.showLogs' | 'pyfill.enable';
  alarm: 'error' | 'warning' | undefined;
}

export function view(status: Status): View {
  switch (status.kind) {
    case 'starting':
      return {
        text: '$(sync~spin) pyfill',
        tooltip: 'pyfill: starting the server',
        label: 'pyfill: starting',
        command: 'pyfill.showLogs',
        alarm: undefined,
      };
    case 'loading': {
      const pct = status.percentage === undefined ? '' : ` ${clampPercent(status.percentage)}%`;
      return {
        text: `$(sync~spin) pyfill${pct}`,
        tooltip: `pyfill: ${status.message}${pct ? ` (${pct.trim()})` : ''}`,
        label: `pyfill: loading${pct}`,
        command: 'pyfill.showLogs',
        alarm: undefined,
      };
    }
    case 'ready':
      return {
        text: '$(check) pyfill',
        tooltip: `pyfill: ready${status.message ? ` (${status.message})` : ''}. Click for the logs.`,
        label: 'pyfill: ready',
        command: 'pyfill.showLogs',
        alarm: undefined,
      };
    case 'disabled':
      return {
        text: '$(circle-slash) pyfill',
        tooltip: 'pyfill: suggestions are off. Click to turn them on.',
        label: 'pyfill: disabled',
        command: 'pyfill.enable',
        alarm: undefined,
      };
    case 'error':
      return {
        text: '$(error) pyfill',
        tooltip: `pyfill: ${status.message}${status.modelMissing ? ' (run the "pyfill: Fetch Model" command)' : ''}. Click for the logs.`,
        label: 'pyfill: error',
        command: 'pyfill.showLogs',
        alarm: 'error',
      };
    case 'stopped':
      return {
        text: '$(debug-disconnect) pyfill',
        tooltip: `pyfill: the server is not running (${status.message}). Click for the logs.`,
        label: 'pyfill: stopped',
        command: 'pyfill.showLogs',
        alarm: 'warning',
      };
  }
}

function clampPercent(p: number): number {
  return Math.round(Math.min(100, Math.max(0, p)));
}

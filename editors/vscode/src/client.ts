// The language client for one run of the `pyfill` server: how it is started, which documents
// it sees, and the middleware that lets the status bar hear what the server says. No state of
// its own: the extension owns the client and the status.

import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  MessageType,
  RevealOutputChannelOn,
  ServerOptions,
  ShowMessageNotification,
  ShowMessageParams,
} from 'vscode-languageclient/node';

import { ServerSettings } from './settings';
import { Event, STATUS_NOTIFICATION } from './status';

/** What the client needs from the extension. */
export interface Host {
  binary: string;
  output: vscode.LogOutputChannel;
  /** The server's settings now (read at each start, so a restart sends the current ones). */
  serverSettings: () => ServerSettings;
  /** Whether suggestions are on; when off, no request leaves the client. */
  enabled: () => boolean;
  onStatusEvent: (event: Event) => void;
  /** A `window/showMessage` from the server, after the status bar has heard it. */
  onServerMessage: (params: ShowMessageParams) => void;
}

export const PYTHON_DOCUMENTS = [
  { scheme: 'file', language: 'python' },
  { scheme: 'untitled', language: 'python' },
];

export function createClient(host: Host): LanguageClient {
  const serverOptions: ServerOptions = {
    command: host.binary,
    args: [],
    // The log goes to an output channel, where color codes would show as text.
    options: { env: { ...process.env, NO_COLOR: '1' } },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: PYTHON_DOCUMENTS,
    initializationOptions: () => host.serverSettings(),
    outputChannel: host.output,
    traceOutputChannel: host.output,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!host.enabled()) {
          return null;
        }
        const answer = await next(document, position, context, token);
        const items = Array.isArray(answer) ? answer : answer?.items ?? [];
        host.onStatusEvent({ type: 'answer', items: items.length });
        return answer;
      },
      // The server also answers `textDocument/completion` with the same suggestion as a list
      // item. In VS Code the ghost text is the way to show it; a second request per keystroke
      // would only compete with the inline one for the model.
      provideCompletionItem: () => null,
      handleWorkDoneProgress: (token, params, next) => {
        next(token, params);
        host.onStatusEvent({
          type: 'progress',
          kind: params.kind,
          message: params.message,
          percentage: params.kind === 'end' ? undefined : params.percentage,
        });
      },
    },
  };
  const client = new LanguageClient('pyfill', 'pyfill', serverOptions, clientOptions);
  client.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
    host.onStatusEvent({ type: 'serverStatus', params });
  });
  // Registered before start, this replaces the client's own handler, so that a missing model
  // is offered a "Fetch Model" button instead of a bare message.
  client.onNotification(ShowMessageNotification.type, (params) => {
    if (params.type === MessageType.Error) {
      host.onStatusEvent({ type: 'errorMessage', message: params.message });
    }
    host.onServerMessage(params);
  });
  return client;
}

export function sendSettings(client: LanguageClient, settings: ServerSettings): Promise<void> {
  return client.sendNotification(DidChangeConfigurationNotification.type, { settings: { pyfill: settings } });
}

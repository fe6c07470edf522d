// The extension's entry point: owns the language client, the status bar item and the log, and
// wires commands and setting changes to them. The decisions (which settings the server gets,
// what the status bar says, where the binary is) are made in the pure modules beside this one.

import * as fs from 'node:fs';
import * as os from 'node:os';

import * as vscode from 'vscode';
import { LanguageClient, MessageType, ShowMessageParams, State } from 'vscode-languageclient/node';

import { findBinary } from './binary';
import { createClient, sendSettings } from './client';
import { fetchModel } from './fetch';
import { SECTION, SERVER_KEYS, ServerSettings, toServerSettings } from './settings';
import { Event, STATUS_NOTIFICATION, Tracker, initial, mentionsModelFetch, next, view } from './status';

let extension: PyfillExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extension = new PyfillExtension(context);
  await extension.start();
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}

class PyfillExtension {
  private readonly output = vscode.window.createOutputChannel('pyfill', { log: true });
  private readonly item = vscode.window.createStatusBarItem('pyfill.status', vscode.StatusBarAlignment.Right, 100);
  private client: LanguageClient | undefined;
  private binary: string | undefined;
  private tracker: Tracker = initial(this.enabled());
  private offeringFetch = false;
  private warnedSettings = '';

  constructor(context: vscode.ExtensionContext) {
    this.item.name = 'pyfill';
    this.draw();
    this.item.show();
    context.subscriptions.push(
      this.output,
      this.item,
      vscode.commands.registerCommand('pyfill.enable', () => this.setEnabled(true)),
      vscode.commands.registerCommand('pyfill.disable', () => this.setEnabled(false)),
      vscode.commands.registerCommand('pyfill.toggle', () => this.setEnabled(!this.enabled())),
      vscode.commands.registerCommand('pyfill.restart', () => this.restart()),
      vscode.commands.registerCommand('pyfill.showLogs', () => this.output.show(true)),
      vscode.commands.registerCommand('pyfill.fetchModel', () => this.fetch()),
      vscode.workspace.onDidChangeConfiguration((e) => this.configurationChanged(e)),
    );
  }

  async start(): Promise<void> {
    const found = findBinary({
      configured: this.config().get<string>('path') ?? '',
      pathEnv: process.env.PATH ?? '',
      home: os.homedir(),
      platform: process.platform,
      workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
      isExecutable,
    });
    if (!found.ok) {
      this.binary = undefined;
      this.output.error(found.message);
      this.update({ type: 'clientFailed', message: 'the pyfill binary was not found' });
      void vscode.window.showErrorMessage(`pyfill: ${found.message}`, 'Open Settings', 'Show Logs').then((choice) => {
        if (choice === 'Open Settings') {
          void vscode.commands.executeCommand('workbench.action.openSettings', 'pyfill.path');
        } else if (choice === 'Show Logs') {
          this.output.show(true);
        }
      });
      return;
    }
    this.binary = found.path;
    this.output.info(`starting ${found.path}`);
    const client = createClient({
      binary: found.path,
      output: this.output,
      serverSettings: () => this.serverSettings(),
      enabled: () => this.enabled(),
      onStatusEvent: (event) => this.update(event),
      onServerMessage: (params) => this.showServerMessage(params),
    });
    client.onDidChangeState((e) => {
      if (this.client !== client) {
        // A client being stopped for a restart: its end is not news.
        return;
      }
      if (e.newState === State.Starting) {
        this.update({ type: 'clientStarting' });
      } else if (e.newState === State.Stopped) {
        this.update({ type: 'clientStopped', message: 'stopped' });
      }
    });
    this.client = client;
    try {
      await client.start();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.output.error(`the server did not start: ${message}`);
      this.update({ type: 'clientFailed', message: `the server did not start: ${message}` });
      return;
    }
    // The notifications say every change from here on; the request says where things stand now
    // (a server without it answers with an error, and the guesses in status.ts take over).
    client.sendRequest(STATUS_NOTIFICATION).then(
      (params) => {
        if (this.client === client) {
          this.update({ type: 'serverStatus', params });
        }
      },
      () => undefined,
    );
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop();
      } catch (error) {
        this.output.warn(`stopping the server: ${error instanceof Error ? error.message : String(error)}`);
      }
      await client.dispose().catch(() => undefined);
    }
  }

  private async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  private enabled(): boolean {
    return this.config().get<boolean>('enable') !== false;
  }

  private serverSettings(): ServerSettings {
    const config = this.config();
    const { settings, problems } = toServerSettings((key) => config.get(key), os.homedir());
    const said = problems.join('\n');
    if (problems.length > 0 && said !== this.warnedSettings) {
      problems.forEach((p) => this.output.warn(p));
      void vscode.window.showWarningMessage(`pyfill: ${problems[0]}`);
    }
    this.warnedSettings = said;
    return settings;
  }

  private async setEnabled(enabled: boolean): Promise<void> {
    // Change the setting where it is set, so a workspace value does not hide a user one.
    const inspected = this.config().inspect<boolean>('enable');
    const target =
      inspected?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : inspected?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    await this.config().update('enable', enabled, target);
  }

  private async configurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (e.affectsConfiguration(`${SECTION}.path`)) {
      await this.restart();
      return;
    }
    if (e.affectsConfiguration(`${SECTION}.enable`)) {
      this.update({ type: 'settingEnabled', enabled: this.enabled() });
    }
    if (this.client?.isRunning() && SERVER_KEYS.some((key) => e.affectsConfiguration(`${SECTION}.${key}`))) {
      await sendSettings(this.client, this.serverSettings());
    }
  }

  private async fetch(): Promise<void> {
    if (!this.binary) {
      void vscode.window.showErrorMessage('pyfill: the pyfill binary was not found; set pyfill.path first');
      return;
    }
    const outcome = await fetchModel(this.binary, this.output);
    if (outcome.ok) {
      void vscode.window.showInformationMessage('pyfill: the model is fetched; restarting the server');
      await this.restart();
    } else if (!outcome.cancelled) {
      const choice = await vscode.window.showErrorMessage(`pyfill: fetching the model failed: ${outcome.message}`, 'Show Logs');
      if (choice === 'Show Logs') {
        this.output.show(true);
      }
    }
  }

  private update(event: Event): void {
    const before = this.tracker.status;
    this.tracker = next(this.tracker, event);
    const after = this.tracker.status;
    if (after.kind === 'error' && after.modelMissing && !(before.kind === 'error' && before.modelMissing)) {
      void this.offerFetch();
    }
    this.draw();
  }

  private draw(): void {
    const v = view(this.tracker.status);
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.accessibilityInformation = { label: v.label };
    this.item.command = v.command;
    this.item.backgroundColor = v.alarm ? new vscode.ThemeColor(`statusBarItem.${v.alarm}Background`) : undefined;
  }

  private showServerMessage(params: ShowMessageParams): void {
    if (params.type === MessageType.Error) {
      if (mentionsModelFetch(params.message)) {
        // Said with a "Fetch Model" button instead.
        this.output.error(params.message);
        void this.offerFetch();
        return;
      }
      void vscode.window.showErrorMessage(params.message, 'Show Logs').then((choice) => {
        if (choice === 'Show Logs') {
          this.output.show(true);
        }
      });
    } else if (params.type === MessageType.Warning) {
      void vscode.window.showWarningMessage(params.message);
    } else {
      void vscode.window.showInformationMessage(params.message);
    }
  }

  private async offerFetch(): Promise<void> {
    if (this.offeringFetch) {
      return;
    }
    this.offeringFetch = true;
    try {
      const choice = await vscode.window.showErrorMessage(
        'pyfill: the default model is not downloaded yet (about 500 MB).',
        'Fetch Model',
        'Show Logs',
      );
      if (choice === 'Fetch Model') {
        await this.fetch();
      } else if (choice === 'Show Logs') {
        this.output.show(true);
      }
    } finally {
      this.offeringFetch = false;
    }
  }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

// `pyfill model fetch` run from VS Code: a cancellable progress notification while it
// downloads, its stderr copied to the log.

import { spawn } from 'node:child_process';

import * as vscode from 'vscode';

export type FetchOutcome = { ok: true } | { ok: false; cancelled: boolean; message: string };

export function fetchModel(binary: string, output: vscode.LogOutputChannel): Thenable<FetchOutcome> {
  return vscode.window.withProgress(
    {
      location: vscode.ProgressLocation.Notification,
      title: 'pyfill: fetching the default model (about 500 MB)',
      cancellable: true,
    },
    (progress, token) =>
      new Promise<FetchOutcome>((resolve) => {
        output.info(`running ${binary} model fetch`);
        const started = Date.now();
        const child = spawn(binary, ['model', 'fetch'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let lastLine = '';
        const onText = (chunk: Buffer) => {
          for (const line of chunk.toString('utf8').split(/[\r\n]+/)) {
            if (line.trim()) {
              lastLine = line.trim();
              output.info(`[model fetch] ${lastLine}`);
            }
          }
        };
        child.stdout.on('data', onText);
        child.stderr.on('data', onText);
        // The download's own progress bar is drawn only on a terminal: show that time passes.
        const ticker = setInterval(() => {
          progress.report({ message: `${Math.round((Date.now() - started) / 1000)} s` });
        }, 1000);
        const cancel = token.onCancellationRequested(() => child.kill());
        child.on('error', (error) => {
          clearInterval(ticker);
          cancel.dispose();
          resolve({ ok: false, cancelled: false, message: `cannot run ${binary}: ${error.message}` });
        });
        child.on('close', (code, signal) => {
          clearInterval(ticker);
          cancel.dispose();
          if (code === 0) {
            resolve({ ok: true });
          } else if (token.isCancellationRequested) {
            resolve({ ok: false, cancelled: true, message: 'cancelled' });
          } else {
            resolve({
              ok: false,
              cancelled: false,
              message: lastLine || `pyfill model fetch exited with ${code ?? signal}`,
            });
          }
        });
      }),
  );
}

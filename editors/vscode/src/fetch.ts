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
        let percent = 0;
        const onText = (chunk: Buffer) => {
          for (const line of chunk.toString('utf8').split(/[\r\n]+/)) {
            if (line.trim()) {
              lastLine = line.trim();
              output.info(`[model fetch] ${lastLine}`);
              // Off a terminal, the download reports lines like "45% (221 of 491 MB)".
              const done = /^(\d+)% \((.*)\)$/.exec(lastLine);
              if (done) {
                const now = Number(done[1]);
                progress.report({ increment: Math.max(0, now - percent), message: done[2] });
                percent = Math.max(percent, now);
              }
            }
          }
        };
        child.stdout.on('data', onText);
        child.stderr.on('data', onText);
        // Verifying and assembling print no percentage: show that time passes.
        const ticker = setInterval(() => {
          if (percent === 0 || percent >= 100) {
            progress.report({ message: `${lastLine} (${Math.round((Date.now() - started) / 1000)} s)` });
          }
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

// A tapgate daemon started for one test, inside that test's network namespace.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Namespace } from './netns.js';
import { tapgateScript } from './env.js';

export interface DaemonHandle {
  process: ChildProcess;
  directory: string;
  socket: string;
  config: string;
  auditLog: string;
  /** Everything the daemon wrote to stderr so far. */
  output(): string;
  /** Audit records written so far. */
  audit(): Record<string, unknown>[];
  /** Rewrites the policy file (the daemon reads it again on SIGHUP). */
  writePolicy(text: string): void;
  stop(): Promise<void>;
}

/** Substitutes AUDIT_LOG in a policy template with the daemon's audit file. */
function renderPolicy(text: string, auditLog: string): string {
  return text.replaceAll('AUDIT_LOG', auditLog);
}

/**
 * Starts `tapgate daemon` in `namespace` with `policy` (TOML; the placeholder AUDIT_LOG becomes
 * the path of a fresh audit file) and resolves once its socket accepts connections.
 * `options.wrapper` is a command prefix run inside the namespace before node; it must exec
 * node in the end, so that the handle's pid stays the daemon's.
 */
export async function startDaemon(namespace: Namespace, policy: string, options: { wrapper?: string[] } = {}): Promise<DaemonHandle> {
  const directory = mkdtempSync(join(tmpdir(), 'tapgate-test-'));
  chmodSync(directory, 0o755);
  const socket = join(directory, 'tapgate.sock');
  const config = join(directory, 'tapgate.toml');
  const auditLog = join(directory, 'audit.log');
  writeFileSync(config, renderPolicy(policy, auditLog));

  let output = '';
  // `wrapper` runs before node inside the namespace, e.g. `unshare --mount ...` to alter /dev.
  const command = [...(options.wrapper ?? []), process.execPath, tapgateScript(), 'daemon', '--config', config, '--socket', socket, '--log-level', 'debug'];
  const child = spawn('ip', ['netns', 'exec', namespace.name, ...command], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk) => { output += chunk; });
  child.stderr!.on('data', (chunk) => { output += chunk; });

  const deadline = Date.now() + 15_000;
  while (!output.includes('"Daemon started"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      // The caller gets no handle, so it cannot remove the directory itself.
      rmSync(directory, { recursive: true, force: true });
      throw new Error(`The daemon did not start (exit ${child.exitCode}):\n${output}`);
    }
    await sleep(20);
  }

  return {
    process: child, directory, socket, config, auditLog,
    output: () => output,
    audit: () => (existsSync(auditLog) ? readFileSync(auditLog, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line)) : []),
    writePolicy: (text) => writeFileSync(config, renderPolicy(text, auditLog)),
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

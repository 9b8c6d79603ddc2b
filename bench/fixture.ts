// Setup shared by the benchmarks: cleanup registration and the worker processes that take
// measurements, either as a test user or as root inside a benchmark's network namespace.
//
// Every benchmark creates its own namespace, users and daemon through test/support and
// registers their removal here, so an interrupted run (SIGINT, SIGTERM, an exception) still
// removes them.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, userReadableRoot } from '../test/support/env.js';

/**
 * Policy lines for the [daemon] table that raise the per-user request rate limit to the
 * maximum the policy accepts, so that the limit does not cap what the benchmarks measure.
 */
export const UNLIMITED_REQUESTS = 'requests_per_second = 1000000\nrequest_burst = 1000000';

/**
 * Returns the NODE_OPTIONS that the shipped systemd unit (packaging/tapgate.service) gives the
 * daemon, or '' when it sets none. The benchmarks use the same options, so the memory and
 * latency they report are those of an installed daemon.
 */
export function unitNodeOptions(): string {
  const unit = readFileSync(join(REPO_ROOT, 'packaging', 'tapgate.service'), 'utf8');
  return /^Environment=NODE_OPTIONS=(.*)$/m.exec(unit)?.[1]?.trim() ?? '';
}

/** Returns the startDaemon options that apply the unit's NODE_OPTIONS (see unitNodeOptions). */
export function unitDaemonOptions(): { wrapper: string[] } {
  const options = unitNodeOptions();
  return { wrapper: options ? ['env', `NODE_OPTIONS=${options}`] : [] };
}

type CleanupStep = () => void | Promise<void>;

const activeCleanups = new Set<Cleanup>();
/** Process groups of running workers, killed by `runActiveCleanups`. */
const activeWorkers = new Set<number>();

/** A stack of removal steps that runs in reverse order, once, even when a step fails. */
export class Cleanup {
  private readonly steps: { label: string; step: CleanupStep }[] = [];
  private running: Promise<void> | undefined;

  constructor() {
    activeCleanups.add(this);
  }

  add(label: string, step: CleanupStep): void {
    this.steps.push({ label, step });
  }

  /** Runs the steps; a second call (a signal during a benchmark's own cleanup) waits for the first. */
  run(): Promise<void> {
    this.running ??= this.runSteps();
    return this.running;
  }

  private async runSteps(): Promise<void> {
    for (const { label, step } of this.steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        process.stderr.write(`bench: cleanup step "${label}" failed: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
    activeCleanups.delete(this);
  }
}

/** Kills running workers and runs every cleanup that has not finished; used on SIGINT and SIGTERM. */
export async function runActiveCleanups(): Promise<void> {
  for (const pid of activeWorkers) killGroup(pid);
  for (const cleanup of [...activeCleanups]) await cleanup.run();
}

/** Creates a temporary directory that other users can traverse and registers its removal. */
export function temporaryDirectory(cleanup: Cleanup, prefix: string): string {
  const directory = mkdtempSync(join(tmpdir(), `${prefix}-`));
  chmodSync(directory, 0o755);
  cleanup.add(`remove ${directory}`, () => rmSync(directory, { recursive: true, force: true }));
  return directory;
}

export interface WorkerPlacement {
  /** Network namespace to run in, in a private mount namespace; none runs in the caller's. */
  namespace?: string;
  /** Run as this user (without supplementary groups) instead of root. */
  user?: { uid: number; gid: number };
  /** The worker and everything it started are killed after this long. */
  timeoutMs: number;
}

/** Returns the path of the compiled worker script, under a root that test users can read. */
export function workerScript(): string {
  return join(userReadableRoot(), 'dist', 'bench', 'worker.js');
}

/**
 * Runs bench/worker.ts with one task and resolves with the JSON object it prints last.
 * The worker runs in its own process group, which is killed on timeout, so helpers and guests
 * it started cannot outlive it.
 * @throws Error with the worker's stderr when it fails, times out or prints no result.
 */
export function runWorker<T>(task: { kind: string }, placement: WorkerPlacement): Promise<T> {
  const command = [process.execPath, workerScript(), JSON.stringify(task)];
  let user = placement.user;
  if (placement.namespace !== undefined) {
    if (user !== undefined) {
      // Entering the namespace needs root, so the user switch comes after it.
      command.unshift('setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--');
      user = undefined;
    }
    // ip netns exec already enters a new mount namespace, and unshare makes it private. So the
    // worker's mounts (the /etc overlay for qemu-bridge-helper) cannot reach the host.
    command.unshift('ip', 'netns', 'exec', placement.namespace, 'unshare', '--mount', '--propagation', 'private', '--');
  }
  const child = spawn(command[0], command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    uid: user?.uid,
    gid: user?.gid,
  });
  if (child.pid !== undefined) activeWorkers.add(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8'); });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });

  return new Promise<T>((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, placement.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`Starting the ${task.kind} worker failed: ${error.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      // Ends helpers, guests or servers that a failed task left in the worker's group.
      killGroup(child.pid);
      if (child.pid !== undefined) activeWorkers.delete(child.pid);
      const lines = stdout.trim().split('\n');
      const last = lines[lines.length - 1] ?? '';
      if (timedOut) {
        reject(new Error(`The ${task.kind} worker timed out after ${placement.timeoutMs} ms and was killed:\n${stderr}`));
      } else if (code !== 0) {
        reject(new Error(`The ${task.kind} worker failed (exit ${code ?? signal}):\n${stderr}${stdout}`));
      } else {
        try {
          resolve(JSON.parse(last) as T);
        } catch {
          reject(new Error(`The ${task.kind} worker printed no JSON result:\n${stdout}\n${stderr}`));
        }
      }
    });
  });
}

/** Sends SIGKILL to the process group led by `pid`; a group that is already gone is ignored. */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

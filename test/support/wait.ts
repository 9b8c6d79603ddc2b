// Polling helpers for tests that wait on the kernel or on the daemon's log.

import { setTimeout as sleep } from 'node:timers/promises';
import type { DaemonHandle } from './daemon.js';

/** Polls `check` until it holds or `timeoutMs` passes; returns its last result. */
export async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(20);
  }
  return check();
}

/** Polls `probe` until it returns a value; throws naming `what` after `timeoutMs`. */
export async function waitForValue<T>(what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Waits until the daemon's log contains `text`; throws with the log after `timeoutMs`. */
export async function waitForOutput(daemon: DaemonHandle, text: string, timeoutMs = 5000): Promise<void> {
  await waitForValue(`${JSON.stringify(text)} in the daemon log:\n${daemon.output()}`, () => (daemon.output().includes(text) ? true : undefined), timeoutMs);
}

// Booting the test guests for the data-plane and launch benchmarks.
//
// The launch benchmark boots the test guest of scripts/build-guest.sh; the data-plane
// benchmark boots the variant of scripts/build-bench-guest.sh, which adds iperf3. Both use
// the QEMU arguments of test/support/guest.ts, which select TCG.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ensureGuest, guestPaths, guestQemuArgs, parseGuestReport, type GuestPaths, type GuestReport } from '../test/support/guest.js';

export const QEMU = 'qemu-system-x86_64';
/** The accelerator that guestQemuArgs selects. */
export const ACCELERATOR = 'tcg';

export interface GuestRun {
  exitCode: number | null;
  timedOut: boolean;
  serial: string;
  stderr: string;
  report: GuestReport;
}

/** Paths of the benchmark guest: the test guest's kernel with the iperf3 initramfs. */
export function benchGuestPaths(repoRoot: string): GuestPaths {
  return { kernel: guestPaths(repoRoot).kernel, initramfs: join(repoRoot, '.cache', 'bench-guest', 'initramfs.cpio.gz') };
}

/**
 * Builds both guests when their caches are stale and returns why they cannot be used, or
 * undefined when they can.
 */
export function guestUnavailableReason(repoRoot: string): string | undefined {
  if (spawnSync(QEMU, ['--version']).status !== 0) return `${QEMU} is not installed (Debian package qemu-system-x86)`;
  try {
    ensureGuest(repoRoot);
  } catch (error) {
    return `the test guest could not be built: ${firstLines(error)}`;
  }
  const build = spawnSync('bash', [join(repoRoot, 'scripts', 'build-bench-guest.sh')], { encoding: 'utf8', timeout: 600_000 });
  if (build.status !== 0) return `the benchmark guest could not be built (scripts/build-bench-guest.sh): ${firstLines(build.stderr || build.error?.message)}`;
  for (const path of [guestPaths(repoRoot).kernel, guestPaths(repoRoot).initramfs, benchGuestPaths(repoRoot).initramfs]) {
    if (!existsSync(path)) return `${path} is missing after the guest builds`;
  }
  return undefined;
}

function firstLines(value: unknown): string {
  const text = value instanceof Error ? value.message : String(value ?? '');
  return text.trim().split('\n').slice(0, 5).join(' | ');
}

export interface GuestLaunch {
  guest: GuestPaths;
  /** Extra kernel parameters (tg.*). */
  append: string[];
  /** -netdev and -device options. */
  network: string[];
  env: Record<string, string>;
  timeoutMs: number;
}

/** Boots a guest and resolves when QEMU exits (the guest powers off after its report). */
export function runGuest(launch: GuestLaunch): { pid: number | undefined; done: Promise<GuestRun> } {
  const args = [...guestQemuArgs({ ...launch.guest, append: launch.append }), ...launch.network];
  const child = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'], env: launch.env });
  let serial = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { serial += chunk.toString('utf8'); });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, launch.timeoutMs);
  const done = new Promise<GuestRun>((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (exitCode) => {
      clearTimeout(timer);
      resolve({ exitCode, timedOut, serial, stderr, report: parseGuestReport(serial) });
    });
  });
  return { pid: child.pid, done };
}

/** Describes a failed boot in one message, with the end of the serial console. */
export function describeGuestFailure(what: string, run: GuestRun): string {
  const tail = run.serial.trim().split('\n').slice(-15).join('\n');
  const how = run.timedOut ? 'timed out' : `exited with status ${run.exitCode}`;
  return `${what}: QEMU ${how}\n--- serial console (end) ---\n${tail}\n--- QEMU stderr ---\n${run.stderr.trim()}`;
}

// Runs test/support/tap-probe.ts as a test user and parses its report.

import { join } from 'node:path';
import { userReadableRoot } from './env.js';
import { runAs, spawnAs, type TestUser } from './users.js';

export interface ProbeReport {
  ok: boolean;
  error?: string;
  grant?: { name: string; ifindex: number; network: string; bridge: string; mtu: number; mac: string; vnetHdr: boolean; queues: number; lease: string };
  infos?: { name: string; flags: number }[];
  arpReply?: boolean;
  tamperResult?: number;
}

export function probeScript(): string {
  return join(userReadableRoot(), 'dist', 'test', 'support', 'tap-probe.js');
}

/** Runs the probe to completion: it gets a tap, reports, and closes it. */
export function probe(user: TestUser, socket: string, args: string[]): ProbeReport {
  const result = runAs(user, process.execPath, [probeScript(), ...args], { env: { TAPGATE_SOCKET: socket } });
  const line = result.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ProbeReport;
  } catch {
    throw new Error(`Probe printed no report (exit ${result.status}): ${result.stdout}${result.stderr}`);
  }
}

/** Starts the probe with --hold; resolves with its report while it keeps the tap open. */
export async function holdTap(user: TestUser, socket: string, args: string[]): Promise<{ report: ProbeReport; release(): Promise<void>; pid: number }> {
  const child = spawnAs(user, process.execPath, [probeScript(), ...args, '--hold'], { TAPGATE_SOCKET: socket }, { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  const report = await new Promise<ProbeReport>((resolve, reject) => {
    child.stdout!.on('data', (chunk) => {
      output += chunk;
      if (output.includes('\n')) resolve(JSON.parse(output.split('\n')[0]) as ProbeReport);
    });
    child.once('exit', (code) => reject(new Error(`Probe exited with ${code} before reporting: ${output}`)));
  });
  return {
    report,
    pid: child.pid!,
    release: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.stdin!.end();
    }),
  };
}

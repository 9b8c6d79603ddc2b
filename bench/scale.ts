// Benchmark 3: grant latency and daemon memory with many live taps.
//
// A worker holds the descriptors of N live taps, all granted by the daemon, then times grants
// that it closes at once. A Linux bridge takes at most 1023 ports (BR_MAX_PORTS is 1024 in
// net/bridge/br_private.h and port 0 is reserved; the next attach fails with EXFULL), so N taps
// cannot sit on one bridge: the measured bridge holds up to PORTS_PER_BRIDGE of them and the
// rest go to filler bridges of the same daemon.

import { readFileSync } from 'node:fs';
import { Namespace } from '../test/support/netns.js';
import { createUser, removeUser, type TestUser } from '../test/support/users.js';
import { startDaemon } from '../test/support/daemon.js';
import { openTap } from '../src/client/client.js';
import { closeAll } from '../src/sys/fd.js';
import { Cleanup, runWorker } from './fixture.js';
import { elapsedMs, summarize, type Summary } from './stats.js';

/** Live taps per bridge, below the kernel's 1023 so the measured grants always find a port. */
export const PORTS_PER_BRIDGE = 1000;
const MEASURED_NETWORK = 's0';

export interface ScaleTask {
  kind: 'scale';
  socket: string;
  measuredNetwork: string;
  fillerNetworks: string[];
  steps: number[];
  grants: number;
  warmup: number;
  daemonPid: number;
}

export interface ScaleStep {
  liveTaps: number;
  /** How many of the live taps are ports of the bridge the timed grants attach to. */
  liveOnMeasuredBridge: number;
  /** Latency of the timed grants (ms). */
  grant: Summary;
  /** The daemon's resident set (VmRSS) after the timed grants, in MiB. */
  daemonRssMiB: number;
  /** Time to grant the taps added for this step (ms). */
  fillMs: number;
}

export interface ScaleResult {
  status: 'measured';
  portsPerBridge: number;
  grantsPerStep: number;
  steps: ScaleStep[];
  /** Time to close every live tap's descriptor at the end (ms); the kernel removes each tap. */
  releaseMs: number;
}

/** Reads VmRSS of a process from /proc/PID/status, in MiB. */
export function residentMiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`No VmRSS line in /proc/${pid}/status`);
  return Number(match[1]) / 1024;
}

/** Worker side: holds taps per the steps, times grants at each step, then releases them all. */
export function measureScale(task: ScaleTask): Omit<ScaleResult, 'status' | 'portsPerBridge' | 'grantsPerStep'> {
  const networks = [task.measuredNetwork, ...task.fillerNetworks];
  const held = new Map<string, number[]>(networks.map((network) => [network, []]));
  const steps: ScaleStep[] = [];
  let releaseMs = 0;
  try {
    for (const liveTaps of task.steps) {
      const fillStart = process.hrtime.bigint();
      let remaining = liveTaps;
      for (const network of networks) {
        const wanted = Math.min(remaining, PORTS_PER_BRIDGE);
        const fds = held.get(network)!;
        while (fds.length < wanted) fds.push(...openTap({ network, socketPath: task.socket, vnetHdr: true }).fds);
        remaining -= wanted;
      }
      if (remaining > 0) throw new RangeError(`${liveTaps} live taps need more than ${networks.length} bridges of ${PORTS_PER_BRIDGE} ports`);
      const fillMs = elapsedMs(fillStart);

      const samples: number[] = [];
      for (let index = 0; index < task.warmup + task.grants; index++) {
        const start = process.hrtime.bigint();
        const { fds } = openTap({ network: task.measuredNetwork, socketPath: task.socket, vnetHdr: true });
        const elapsed = elapsedMs(start);
        closeAll(fds);
        if (index >= task.warmup) samples.push(elapsed);
      }
      steps.push({
        liveTaps,
        liveOnMeasuredBridge: held.get(task.measuredNetwork)!.length,
        grant: summarize(samples),
        daemonRssMiB: residentMiB(task.daemonPid),
        fillMs,
      });
    }
  } finally {
    const releaseStart = process.hrtime.bigint();
    for (const fds of held.values()) closeAll(fds);
    releaseMs = elapsedMs(releaseStart);
  }
  return { steps, releaseMs };
}

function policy(user: TestUser, networks: string[]): string {
  const definitions = networks.map((network, index) => `[networks.${network}]\nbridge = "tgbs${index}"\n`).join('\n');
  return `
[daemon]
audit_log = "AUDIT_LOG"

${definitions}
[[allow]]
name = "benchmark user"
users = ["${user.name}"]
networks = ["*"]
max_taps = 65536
`;
}

/** Runs the scale benchmark over `steps` (numbers of live taps), timing `grants` grants at each. */
export async function runScale(steps: number[], grants: number, warmup: number): Promise<ScaleResult> {
  const cleanup = new Cleanup();
  try {
    const fillers = Math.ceil(Math.max(0, Math.max(...steps) - PORTS_PER_BRIDGE) / PORTS_PER_BRIDGE);
    const networks = [MEASURED_NETWORK, ...Array.from({ length: fillers }, (_, index) => `s${index + 1}`)];
    const namespace = new Namespace('tgbench-scale');
    cleanup.add('remove namespace', () => namespace.destroy());
    networks.forEach((_, index) => namespace.addBridge(`tgbs${index}`));
    const user = createUser('tgbu');
    cleanup.add('remove user', () => removeUser(user));
    const daemon = await startDaemon(namespace, policy(user, networks));
    cleanup.add('stop daemon', () => daemon.stop());

    const task: ScaleTask = {
      kind: 'scale', socket: daemon.socket, measuredNetwork: MEASURED_NETWORK, fillerNetworks: networks.slice(1),
      steps, grants, warmup, daemonPid: daemon.process.pid!,
    };
    const measured = await runWorker<Omit<ScaleResult, 'status' | 'portsPerBridge' | 'grantsPerStep'>>(task, {
      user: { uid: user.uid, gid: user.gid },
      timeoutMs: 600_000,
    });
    return { status: 'measured', portsPerBridge: PORTS_PER_BRIDGE, grantsPerStep: grants, ...measured };
  } finally {
    await cleanup.run();
  }
}

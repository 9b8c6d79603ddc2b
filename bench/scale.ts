// Benchmark 3: grant latency and daemon memory with many live taps.
//
// A worker holds the descriptors of N live taps, all granted by the daemon, then times grants
// that it closes at once: first through the daemon, then the same kernel calls without it, so
// that growth in the kernel can be separated from growth in the daemon. A Linux bridge takes
// at most 1023 ports (BR_MAX_PORTS is 1024 in net/bridge/br_private.h and port 0 is reserved;
// the next attach fails with EXFULL), so N taps cannot sit on one bridge: the measured bridge
// holds up to PORTS_PER_BRIDGE of them and the rest go to filler bridges of the same daemon.

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Namespace } from '../test/support/netns.js';
import { startDaemon } from '../test/support/daemon.js';
import { closeAll } from '../src/sys/fd.js';
import { RtnlSocket } from '../src/sys/rtnl.js';
import { Cleanup, runWorker, unitDaemonOptions, UNLIMITED_REQUESTS } from './fixture.js';
import { grantKernelCalls, libraryGrant, timeGrants } from './grant-timing.js';
import { elapsedMs, summarize, type Summary } from './stats.js';

/** Live taps per bridge, below the kernel's 1023 so the measured grants always find a port. */
export const PORTS_PER_BRIDGE = 1000;
const MEASURED_NETWORK = 's0';

export interface ScaleTask {
  kind: 'scale';
  socket: string;
  measuredNetwork: string;
  measuredBridge: string;
  fillerNetworks: string[];
  steps: number[];
  grants: number;
  warmup: number;
  settleMs: number;
  daemonPid: number;
}

export interface ScaleStep {
  liveTaps: number;
  /** How many of the live taps are ports of the bridge the timed grants attach to. */
  liveOnMeasuredBridge: number;
  /** Latency of the timed grants through the daemon (ms). */
  grant: Summary;
  /** Time of the same grants' kernel calls made without the daemon (ms). */
  kernelOnly: Summary;
  /** The daemon's resident set (VmRSS) right after the grants through it, in MiB. */
  daemonRssMiB: number;
  /**
   * VmRSS after settleMs without requests, in MiB. V8 keeps the young generation that a burst
   * of grants grew until its memory reducer runs. On the benchmark's 2-vCPU VM that took
   * about 35 s in one run and did not happen within 60 s in another.
   */
  settledRssMiB: number;
  /** Time to grant the taps added for this step (ms). */
  fillMs: number;
}

export interface ScaleResult {
  status: 'measured';
  portsPerBridge: number;
  grantsPerStep: number;
  settleMs: number;
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

/** Worker side (root, inside the namespace): holds taps per the steps, times grants at each, then releases them all. */
export async function measureScale(task: ScaleTask): Promise<Omit<ScaleResult, 'status' | 'portsPerBridge' | 'grantsPerStep' | 'settleMs'>> {
  const networks = [task.measuredNetwork, ...task.fillerNetworks];
  const held = new Map<string, number[]>(networks.map((network) => [network, []]));
  const rtnl = new RtnlSocket();
  const steps: ScaleStep[] = [];
  let releaseMs = 0;
  try {
    for (const liveTaps of task.steps) {
      const fillStart = process.hrtime.bigint();
      fillTo(liveTaps, networks, held, task.socket);
      const fillMs = elapsedMs(fillStart);

      const grant = summarize(timeGrants(task.grants, task.warmup, rtnl, () => libraryGrant(task.socket, task.measuredNetwork)));
      const daemonRssMiB = residentMiB(task.daemonPid);
      const kernelOnly = summarize(timeGrants(task.grants, task.warmup, rtnl, () => grantKernelCalls(rtnl, task.measuredBridge)));
      await sleep(task.settleMs);
      const settledRssMiB = residentMiB(task.daemonPid);
      steps.push({ liveTaps, liveOnMeasuredBridge: held.get(task.measuredNetwork)!.length, grant, kernelOnly, daemonRssMiB, settledRssMiB, fillMs });
    }
  } finally {
    rtnl.close();
    const releaseStart = process.hrtime.bigint();
    for (const fds of held.values()) closeAll(fds);
    releaseMs = elapsedMs(releaseStart);
  }
  return { steps, releaseMs };
}

/** Requests taps until `networks` hold `liveTaps` in all, filling each up to PORTS_PER_BRIDGE in order. */
function fillTo(liveTaps: number, networks: string[], held: Map<string, number[]>, socket: string): void {
  let remaining = liveTaps;
  for (const network of networks) {
    const wanted = Math.min(remaining, PORTS_PER_BRIDGE);
    const fds = held.get(network)!;
    while (fds.length < wanted) fds.push(...libraryGrant(socket, network).fds);
    remaining -= wanted;
  }
  if (remaining > 0) throw new RangeError(`${liveTaps} live taps need more than ${networks.length} bridges of ${PORTS_PER_BRIDGE} ports`);
}

function policy(networks: string[]): string {
  const definitions = networks.map((network, index) => `[networks.${network}]\nbridge = "tgbs${index}"\n`).join('\n');
  return `
[daemon]
audit_log = "AUDIT_LOG"
${UNLIMITED_REQUESTS}

${definitions}
[[allow]]
name = "benchmark holder"
users = ["root"]
networks = ["*"]
max_taps = 65536
`;
}

/**
 * Runs the scale benchmark over `steps` (numbers of live taps), timing `grants` grants at each
 * and reading the daemon's RSS again after `settleMs` without requests.
 */
export async function runScale(steps: number[], grants: number, warmup: number, settleMs: number): Promise<ScaleResult> {
  const cleanup = new Cleanup();
  try {
    const fillers = Math.ceil(Math.max(0, Math.max(...steps) - PORTS_PER_BRIDGE) / PORTS_PER_BRIDGE);
    const networks = [MEASURED_NETWORK, ...Array.from({ length: fillers }, (_, index) => `s${index + 1}`)];
    const namespace = new Namespace('tgbench-scale');
    cleanup.add('remove namespace', () => namespace.destroy());
    networks.forEach((_, index) => namespace.addBridge(`tgbs${index}`));
    const daemon = await startDaemon(namespace, policy(networks), unitDaemonOptions());
    cleanup.add('stop daemon', () => daemon.stop());

    // The worker runs as root in the namespace because the kernel-only grants need CAP_NET_ADMIN there.
    const task: ScaleTask = {
      kind: 'scale', socket: daemon.socket, measuredNetwork: MEASURED_NETWORK, measuredBridge: 'tgbs0',
      fillerNetworks: networks.slice(1), steps, grants, warmup, settleMs, daemonPid: daemon.process.pid!,
    };
    const measured = await runWorker<Omit<ScaleResult, 'status' | 'portsPerBridge' | 'grantsPerStep' | 'settleMs'>>(task, {
      namespace: namespace.name,
      timeoutMs: 900_000 + steps.length * settleMs,
    });
    return { status: 'measured', portsPerBridge: PORTS_PER_BRIDGE, grantsPerStep: grants, settleMs, ...measured };
  } finally {
    await cleanup.run();
  }
}

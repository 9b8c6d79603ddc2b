// Benchmark 5: time from launching QEMU to the guest's first DHCP lease.
//
// QEMU starts the test guest with `-netdev bridge,helper=...` and `tg.dhcp=1`, once through
// bin/tapgate-helper and once through Debian's qemu-bridge-helper (as root, with an ACL that
// only this worker can read). A dnsmasq started on the bridge serves the lease; the time is taken
// when dnsmasq logs its DHCPACK for the guest's MAC address.

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Namespace } from '../test/support/netns.js';
import { startDaemon } from '../test/support/daemon.js';
import { REPO_ROOT, userReadableRoot } from '../test/support/env.js';
import { guestPaths, type GuestPaths } from '../test/support/guest.js';
import { BRIDGE_HELPER, installBridgeAcl, mountNamespace } from './bridge-acl.js';
import { Cleanup, runWorker, temporaryDirectory, unitDaemonOptions, UNLIMITED_REQUESTS } from './fixture.js';
import { helperPath } from './helper-spawn.js';
import { ACCELERATOR, describeGuestFailure, runGuest } from './guest-run.js';
import { elapsedMs, median } from './stats.js';

const BRIDGE = 'tgbl0';
const LAUNCHERS = ['tapgate', 'qemuBridgeHelper'] as const;
type Launcher = (typeof LAUNCHERS)[number];
const LEASE_TIMEOUT_MS = 180_000;

export interface LaunchTask {
  kind: 'launch';
  socket: string;
  helpers: Record<Launcher, string>;
  guest: GuestPaths;
  scratch: string;
  hostMountNamespace: string;
  repetitions: number;
}

export type LaunchResult =
  | {
    status: 'measured';
    accelerator: string;
    repetitions: number;
    launchers: Record<Launcher, { runsMs: number[]; medianMs: number }>;
    /** Median time with tapgate divided by the median with qemu-bridge-helper. */
    ratioToReference: number;
  }
  | { status: 'skipped'; reason: string };

const ACK_LINE = /DHCPACK\((\S+)\) (\S+) ([0-9a-f:]{17})/g;

/** Starts dnsmasq on the bridge, serving DHCP only, and calls `onAck` with each leased MAC. */
function startDnsmasq(scratch: string, onAck: (mac: string) => void): Promise<ChildProcess> {
  const dnsmasq = spawn('dnsmasq', [
    '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--port=0',
    `--interface=${BRIDGE}`, '--bind-interfaces', '--dhcp-authoritative',
    '--dhcp-range=10.79.0.100,10.79.0.199,255.255.255.0,10m',
    `--dhcp-leasefile=${join(scratch, 'dnsmasq.leases')}`, `--pid-file=${join(scratch, 'dnsmasq.pid')}`,
    '--log-facility=-', '--log-dhcp',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let pending = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dnsmasq did not report its DHCP range within 10 s: ${pending}`)), 10_000);
    dnsmasq.stderr!.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      if (pending.includes('DHCP, IP range')) {
        clearTimeout(timer);
        resolve(dnsmasq);
      }
      for (const match of pending.matchAll(ACK_LINE)) onAck(match[3]);
      pending = pending.slice(pending.lastIndexOf('\n') + 1);
    });
    dnsmasq.once('exit', (code) => reject(new Error(`dnsmasq exited with status ${code}: ${pending}`)));
  });
}

async function launchOnce(task: LaunchTask, launcher: Launcher, mac: string, leases: Map<string, bigint>): Promise<number> {
  const env: Record<string, string> = { PATH: helperPath() };
  if (launcher === 'tapgate') env.TAPGATE_SOCKET = task.socket;
  const start = process.hrtime.bigint();
  const { done } = runGuest({
    guest: task.guest,
    append: ['tg.dhcp=1'],
    network: ['-netdev', `bridge,id=n0,br=${BRIDGE},helper=${task.helpers[launcher]}`, '-device', `virtio-net-pci,netdev=n0,mac=${mac}`],
    env,
    timeoutMs: LEASE_TIMEOUT_MS,
  });
  const run = await done;
  if (run.report.dhcp !== 'ok') throw new Error(describeGuestFailure(`The guest launched with ${launcher} got no DHCP lease`, run));
  // dnsmasq may log the lease a moment after the guest has already powered off.
  for (let wait = 0; !leases.has(mac) && wait < 100; wait++) await sleep(10);
  const leasedAt = leases.get(mac);
  if (leasedAt === undefined) throw new Error(`dnsmasq logged no DHCPACK for ${mac}, though the guest reported a lease`);
  return elapsedMs(start, leasedAt);
}

/** Worker side (root, inside the namespace): alternates launchers for `repetitions` rounds. */
export async function measureLaunch(task: LaunchTask): Promise<Record<Launcher, number[]>> {
  installBridgeAcl(join(task.scratch, 'acl'), [BRIDGE], task.hostMountNamespace);
  const leases = new Map<string, bigint>();
  const dnsmasq = await startDnsmasq(task.scratch, (mac) => { if (!leases.has(mac)) leases.set(mac, process.hrtime.bigint()); });
  try {
    const runs: Record<Launcher, number[]> = { tapgate: [], qemuBridgeHelper: [] };
    for (let repetition = 0; repetition < task.repetitions; repetition++) {
      const order = repetition % 2 === 0 ? [...LAUNCHERS] : [...LAUNCHERS].reverse();
      for (const [index, launcher] of order.entries()) {
        // A fresh MAC per boot, so every boot gets (and is timed by) its own DHCPACK line.
        const mac = `52:54:00:7b:${repetition.toString(16).padStart(2, '0')}:${index.toString(16).padStart(2, '0')}`;
        runs[launcher].push(await launchOnce(task, launcher, mac, leases));
      }
    }
    return runs;
  } finally {
    dnsmasq.kill('SIGTERM');
  }
}

function policy(): string {
  return `
[daemon]
audit_log = "AUDIT_LOG"
${UNLIMITED_REQUESTS}

[networks.launch]
bridge = "${BRIDGE}"

[[allow]]
name = "QEMU as root"
users = ["root"]
networks = ["launch"]
`;
}

/** Runs the launch benchmark; `guestProblem` is why the guest is unavailable, if it is. */
export async function runLaunch(repetitions: number, guestProblem: string | undefined): Promise<LaunchResult> {
  if (guestProblem) return { status: 'skipped', reason: guestProblem };
  const cleanup = new Cleanup();
  try {
    const namespace = new Namespace('tgbench-launch');
    cleanup.add('remove namespace', () => namespace.destroy());
    namespace.addBridge(BRIDGE, { cidr: '10.79.0.1/24' });
    const daemon = await startDaemon(namespace, policy(), unitDaemonOptions());
    cleanup.add('stop daemon', () => daemon.stop());

    const task: LaunchTask = {
      kind: 'launch',
      socket: daemon.socket,
      helpers: { tapgate: join(userReadableRoot(), 'bin', 'tapgate-helper'), qemuBridgeHelper: BRIDGE_HELPER },
      guest: guestPaths(REPO_ROOT),
      scratch: temporaryDirectory(cleanup, 'tgbench-launch'),
      hostMountNamespace: mountNamespace(),
      repetitions,
    };
    const runs = await runWorker<Record<Launcher, number[]>>(task, {
      namespace: namespace.name,
      timeoutMs: repetitions * LAUNCHERS.length * (LEASE_TIMEOUT_MS + 10_000),
    });
    const launchers = {
      tapgate: { runsMs: runs.tapgate, medianMs: median(runs.tapgate) },
      qemuBridgeHelper: { runsMs: runs.qemuBridgeHelper, medianMs: median(runs.qemuBridgeHelper) },
    };
    return {
      status: 'measured',
      accelerator: ACCELERATOR,
      repetitions,
      launchers,
      ratioToReference: launchers.tapgate.medianMs / launchers.qemuBridgeHelper.medianMs,
    };
  } finally {
    await cleanup.run();
  }
}

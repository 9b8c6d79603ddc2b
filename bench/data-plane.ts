// Benchmark 4: guest-to-host TCP throughput over four network back ends.
//
// The same guest (scripts/build-bench-guest.sh) runs `iperf3 -c SERVER -J` against an iperf3
// server in the benchmark's namespace, once per back end and repetition:
//   tapgate   -netdev bridge with helper=bin/tapgate-helper: a tap granted by the daemon
//   rootTap   -netdev tap,ifname=...: a tap that root created with `ip tuntap` on the same bridge
//   passt     -netdev stream to a passt process, which maps the gateway address to the host
//   slirp     -netdev user, QEMU's built-in user-mode networking
// Every guest uses a static address and MTU 1500. Back ends alternate within a repetition, and
// every second repetition runs them in reverse order, so drift affects all of them alike.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Namespace } from '../test/support/netns.js';
import { startDaemon } from '../test/support/daemon.js';
import { REPO_ROOT, userReadableRoot } from '../test/support/env.js';
import type { GuestPaths } from '../test/support/guest.js';
import { Cleanup, runWorker, temporaryDirectory, unitDaemonOptions, UNLIMITED_REQUESTS } from './fixture.js';
import { helperPath } from './helper-spawn.js';
import { ACCELERATOR, benchGuestPaths, describeGuestFailure, runGuest } from './guest-run.js';
import { median } from './stats.js';

export const BACKENDS = ['tapgate', 'rootTap', 'passt', 'slirp'] as const;
export type Backend = (typeof BACKENDS)[number];

const BRIDGE = 'tgbd0';
const ROOT_TAP = 'tgbroot0';
const HOST_ADDRESS = '10.78.0.1';
/** A gateway that exists only as passt's route; passt maps it to the host's loopback. */
const PASST_GATEWAY = '10.78.0.254';
const VHOST_NET = '/dev/vhost-net';

export interface DataPlaneTask {
  kind: 'data-plane';
  socket: string;
  helper: string;
  guest: GuestPaths;
  scratch: string;
  repetitions: number;
  seconds: number;
}

export interface BackendThroughput {
  /** Receiver-side throughput of each run, in Mbit/s. */
  runsMbps: number[];
  medianMbps: number;
}

export type DataPlaneResult =
  | {
    status: 'measured';
    accelerator: string;
    vhost: { available: boolean; reason: string };
    repetitions: number;
    secondsPerRun: number;
    mtu: number;
    backends: Record<Backend, BackendThroughput>;
    /** Median throughput of each back end divided by the root-created tap's. */
    ratioToRootTap: Record<Backend, number>;
  }
  | { status: 'skipped'; reason: string };

interface BackendSetup {
  network: string[];
  append: string[];
  env: Record<string, string>;
  stop?: () => Promise<void>;
}

/** Returns the receiver-side bits per second from the guest's TAPGATE-IPERF lines. */
export function parseIperfThroughput(serial: string): number {
  const json = serial.split(/\r?\n/)
    .filter((line) => line.startsWith('TAPGATE-IPERF '))
    .map((line) => line.slice('TAPGATE-IPERF '.length))
    .join('\n');
  let report: { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  try {
    report = JSON.parse(json);
  } catch {
    throw new Error(`The guest printed no iperf3 JSON report:\n${json.slice(0, 2000)}`);
  }
  const bits = report.end?.sum_received?.bits_per_second;
  if (report.error || typeof bits !== 'number') throw new Error(`iperf3 in the guest failed: ${report.error ?? 'no end.sum_received in its report'}`);
  return bits;
}

async function waitForPath(path: string, timeoutMs: number, creator: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (creator.exitCode !== null) throw new Error(`${creator.spawnfile} exited with status ${creator.exitCode} before it created ${path}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(5000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

async function setUpBackend(backend: Backend, task: DataPlaneTask, run: number): Promise<BackendSetup> {
  const base = { env: { PATH: helperPath() } };
  const tapGuest = [`tg.ip=10.78.0.2/24`, `tg.iperf=${HOST_ADDRESS}`];
  switch (backend) {
    case 'tapgate':
      return {
        ...base,
        env: { ...base.env, TAPGATE_SOCKET: task.socket },
        network: ['-netdev', `bridge,id=n0,br=${BRIDGE},helper=${task.helper}`],
        append: tapGuest,
      };
    case 'rootTap':
      return { ...base, network: ['-netdev', `tap,id=n0,ifname=${ROOT_TAP},script=no,downscript=no`], append: tapGuest };
    case 'slirp':
      // 10.0.2.2 is slirp's alias for the host's loopback.
      return { ...base, network: ['-netdev', 'user,id=n0'], append: ['tg.ip=10.0.2.15/24', 'tg.iperf=10.0.2.2'] };
    case 'passt': {
      // passt switches to the user "nobody" before it binds its socket, so that user needs write access here.
      const directory = join(task.scratch, 'passt');
      mkdirSync(directory, { recursive: true, mode: 0o777 });
      chmodSync(directory, 0o777);
      const socket = join(directory, `passt-${run}.sock`);
      const passt = spawn('passt', ['--foreground', '--socket', socket, '--log-file', join(task.scratch, `passt-${run}.log`)], { stdio: ['ignore', 'ignore', 'ignore'] });
      try {
        await waitForPath(socket, 10_000, passt);
      } catch (error) {
        await stopProcess(passt);
        throw error;
      }
      return {
        ...base,
        network: ['-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${socket}`],
        // passt gives the guest the host's own address and maps its gateway to the host.
        append: [`tg.ip=${HOST_ADDRESS}/24`, `tg.iperf=${PASST_GATEWAY}`],
        stop: () => stopProcess(passt),
      };
    }
  }
}

async function measureOnce(backend: Backend, task: DataPlaneTask, run: number): Promise<number> {
  const setup = await setUpBackend(backend, task, run);
  try {
    const { done } = runGuest({
      guest: task.guest,
      append: [...setup.append, `tg.iperftime=${task.seconds}`],
      network: [...setup.network, '-device', 'virtio-net-pci,netdev=n0'],
      env: setup.env,
      timeoutMs: 180_000 + task.seconds * 1000,
    });
    const result = await done;
    if (result.exitCode !== 0 || !result.report.done) throw new Error(describeGuestFailure(`The ${backend} guest failed`, result));
    return parseIperfThroughput(result.serial) / 1e6;
  } finally {
    await setup.stop?.();
  }
}

/** Worker side (root, inside the namespace): runs every back end `repetitions` times. */
export async function measureDataPlane(task: DataPlaneTask): Promise<Record<Backend, number[]>> {
  // --forceflush: iperf3 buffers its output on a pipe, which would hide "Server listening".
  const server = spawn('iperf3', ['--server', '--bind', '0.0.0.0', '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  execFileSync('ip', ['tuntap', 'add', 'dev', ROOT_TAP, 'mode', 'tap', 'vnet_hdr']);
  try {
    execFileSync('ip', ['link', 'set', ROOT_TAP, 'master', BRIDGE, 'up']);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('iperf3 --server did not report "Server listening" within 10 s')), 10_000);
      server.stdout!.on('data', (chunk: Buffer) => {
        if (!chunk.toString().includes('Server listening')) return;
        clearTimeout(timer);
        resolve();
      });
      server.once('exit', (code) => reject(new Error(`iperf3 --server exited with status ${code}`)));
    });
    const runs = Object.fromEntries(BACKENDS.map((backend) => [backend, [] as number[]])) as Record<Backend, number[]>;
    for (let repetition = 0; repetition < task.repetitions; repetition++) {
      const order = repetition % 2 === 0 ? [...BACKENDS] : [...BACKENDS].reverse();
      for (const backend of order) runs[backend].push(await measureOnce(backend, task, repetition));
    }
    return runs;
  } finally {
    await stopProcess(server);
    execFileSync('ip', ['link', 'del', ROOT_TAP]);
  }
}

function policy(): string {
  return `
[daemon]
audit_log = "AUDIT_LOG"
${UNLIMITED_REQUESTS}

[networks.data]
bridge = "${BRIDGE}"

[[allow]]
name = "QEMU as root"
users = ["root"]
networks = ["data"]
`;
}

/** Runs the data-plane benchmark; `guestProblem` is why the guest is unavailable, if it is. */
export async function runDataPlane(repetitions: number, seconds: number, guestProblem: string | undefined): Promise<DataPlaneResult> {
  if (guestProblem) return { status: 'skipped', reason: guestProblem };
  const cleanup = new Cleanup();
  try {
    const namespace = new Namespace('tgbench-data');
    cleanup.add('remove namespace', () => namespace.destroy());
    namespace.addBridge(BRIDGE, { cidr: `${HOST_ADDRESS}/24` });
    // passt copies its guest's address and gateway from the interface with the default route.
    namespace.ip('route', 'add', 'default', 'via', PASST_GATEWAY);
    const daemon = await startDaemon(namespace, policy(), unitDaemonOptions());
    cleanup.add('stop daemon', () => daemon.stop());

    const task: DataPlaneTask = {
      kind: 'data-plane',
      socket: daemon.socket,
      helper: join(userReadableRoot(), 'bin', 'tapgate-helper'),
      guest: benchGuestPaths(REPO_ROOT),
      scratch: temporaryDirectory(cleanup, 'tgbench-data'),
      repetitions,
      seconds,
    };
    const runs = await runWorker<Record<Backend, number[]>>(task, {
      namespace: namespace.name,
      timeoutMs: repetitions * BACKENDS.length * (240_000 + seconds * 1000),
    });

    const backends = Object.fromEntries(BACKENDS.map((backend) => [backend, { runsMbps: runs[backend], medianMbps: median(runs[backend]) }])) as Record<Backend, BackendThroughput>;
    const ratioToRootTap = Object.fromEntries(BACKENDS.map((backend) => [backend, backends[backend].medianMbps / backends.rootTap.medianMbps])) as Record<Backend, number>;
    return {
      status: 'measured',
      accelerator: ACCELERATOR,
      vhost: existsSync(VHOST_NET)
        ? { available: true, reason: `${VHOST_NET} exists, but the runs above do not use it (vhost runs are not implemented)` }
        : { available: false, reason: `${VHOST_NET} does not exist on this machine` },
      repetitions,
      secondsPerRun: seconds,
      mtu: 1500,
      backends,
      ratioToRootTap,
    };
  } finally {
    await cleanup.run();
  }
}

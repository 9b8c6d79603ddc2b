// Benchmark 1: grant latency, from request to usable tap descriptor.
//
// One run measures three ways to get a tap on the same bridge:
//   library             openTap() from the client library, in one long-lived process
//   tapgate-helper      the native helper (dist/native/tapgate-helper, what install.sh installs)
//                       started per tap, as QEMU starts a bridge helper
//   tapgate-helper/Node the Node build of the same helper, started the same way
//   qemu-bridge-helper  Debian's helper, started the same way as root (the reference)
// Helper runs alternate between the two helpers, so drift on the machine affects both alike.
// A fourth series, kernelOnly, makes the kernel calls of one grant directly from a root
// process: the share of a grant that no daemon code can remove.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Namespace } from '../test/support/netns.js';
import { createUser, removeUser, type TestUser } from '../test/support/users.js';
import { startDaemon } from '../test/support/daemon.js';
import { userReadableRoot } from '../test/support/env.js';
import { RtnlSocket } from '../src/sys/rtnl.js';
import { BRIDGE_HELPER, installBridgeAcl, mountNamespace } from './bridge-acl.js';
import { Cleanup, runWorker, temporaryDirectory, unitDaemonOptions, UNLIMITED_REQUESTS } from './fixture.js';
import { helperPath, runHelperOnce, type HelperCommand } from './helper-spawn.js';
import { grantKernelCalls, libraryGrant, timeGrants, waitForRemoval } from './grant-timing.js';
import { summarize, type Summary } from './stats.js';

const BRIDGE = 'tgbg0';
const NETWORK = 'bench';

export interface GrantLatencyResult {
  status: 'measured';
  grantsPerSeries: number;
  warmupPerSeries: number;
  /** Latency to a usable descriptor, per way of getting a tap (ms). */
  series: { library: Summary; tapgateHelper: Summary; tapgateHelperNode: Summary; qemuBridgeHelper: Summary };
  /** Time of a grant's kernel calls alone, without the daemon (ms). */
  kernelOnly: Summary;
  /** Latency to the descriptor's arrival, before the helper exits (ms). */
  helperFdArrival: { tapgateHelper: Summary; tapgateHelperNode: Summary; qemuBridgeHelper: Summary };
  /** p50 of the reference divided by p50 of each tapgate path: how many times faster tapgate is. */
  speedupOverReference: { library: number; tapgateHelper: number; tapgateHelperNode: number };
}

export interface LibraryGrantTask {
  kind: 'library-grants';
  socket: string;
  network: string;
  count: number;
  warmup: number;
}

export interface KernelGrantTask {
  kind: 'kernel-grants';
  bridge: string;
  count: number;
  warmup: number;
}

export interface HelperGrantTask {
  kind: 'helper-grants';
  bridge: string;
  aclDirectory: string;
  hostMountNamespace: string;
  helpers: Record<string, HelperCommand>;
  count: number;
  warmup: number;
}

/** Worker side (a test user, inside the namespace): times `count` openTap calls after `warmup` untimed ones. */
export function measureLibraryGrants(task: LibraryGrantTask): { samplesMs: number[] } {
  const rtnl = new RtnlSocket();
  try {
    return { samplesMs: timeGrants(task.count, task.warmup, rtnl, () => libraryGrant(task.socket, task.network)) };
  } finally {
    rtnl.close();
  }
}

/** Worker side (root, inside the namespace): times the kernel calls of `count` grants. */
export function measureKernelGrants(task: KernelGrantTask): { samplesMs: number[] } {
  const rtnl = new RtnlSocket();
  try {
    return { samplesMs: timeGrants(task.count, task.warmup, rtnl, () => grantKernelCalls(rtnl, task.bridge)) };
  } finally {
    rtnl.close();
  }
}

/** Worker side: runs each helper `count` times, alternating between them. */
export async function measureHelperGrants(task: HelperGrantTask): Promise<Record<string, { fdMs: number[]; usableMs: number[] }>> {
  installBridgeAcl(task.aclDirectory, [task.bridge], task.hostMountNamespace);
  const results: Record<string, { fdMs: number[]; usableMs: number[] }> = {};
  for (const name of Object.keys(task.helpers)) results[name] = { fdMs: [], usableMs: [] };
  const rtnl = new RtnlSocket();
  for (let index = 0; index < task.warmup + task.count; index++) {
    for (const [name, helper] of Object.entries(task.helpers)) {
      const sample = await runHelperOnce(helper, task.bridge);
      // As in timeGrants: the next run starts once this tap is gone.
      waitForRemoval(rtnl, sample.tap);
      if (index < task.warmup) continue;
      results[name].fdMs.push(sample.fdMs);
      results[name].usableMs.push(sample.usableMs);
    }
  }
  rtnl.close();
  return results;
}

function policy(user: TestUser): string {
  return `
[daemon]
audit_log = "AUDIT_LOG"
${UNLIMITED_REQUESTS}

[networks.${NETWORK}]
bridge = "${BRIDGE}"

[[allow]]
name = "benchmark user"
users = ["${user.name}"]
networks = ["${NETWORK}"]
max_taps = 64
`;
}

/** Runs the grant latency benchmark with `count` timed grants per series. */
export async function runGrantLatency(count: number, warmup: number): Promise<GrantLatencyResult> {
  const cleanup = new Cleanup();
  try {
    const namespace = new Namespace('tgbench-grant');
    cleanup.add('remove namespace', () => namespace.destroy());
    namespace.addBridge(BRIDGE, { cidr: '10.77.0.1/24' });
    const user = createUser('tgbu');
    cleanup.add('remove user', () => removeUser(user));
    const daemon = await startDaemon(namespace, policy(user), unitDaemonOptions());
    cleanup.add('stop daemon', () => daemon.stop());
    const asUser = { uid: user.uid, gid: user.gid };

    const libraryTask: LibraryGrantTask = { kind: 'library-grants', socket: daemon.socket, network: NETWORK, count, warmup };
    const library = await runWorker<{ samplesMs: number[] }>(libraryTask, { namespace: namespace.name, user: asUser, timeoutMs: 60_000 + count * 100 });

    const kernelTask: KernelGrantTask = { kind: 'kernel-grants', bridge: BRIDGE, count, warmup };
    const kernel = await runWorker<{ samplesMs: number[] }>(kernelTask, { namespace: namespace.name, timeoutMs: 60_000 + count * 100 });

    const env = { PATH: helperPath() };
    const userEnv = { ...env, TAPGATE_SOCKET: daemon.socket };
    const root = userReadableRoot();
    const native = join(root, 'dist', 'native', 'tapgate-helper');
    if (!existsSync(native)) throw new Error(`${native} is missing; build it with "sh scripts/build-native.sh" (needs gcc and libc6-dev)`);
    const helpers: Record<string, HelperCommand> = {
      tapgateHelper: { path: native, env: userEnv, user: asUser },
      tapgateHelperNode: { path: process.execPath, args: [join(root, 'dist', 'src', 'cli', 'main-helper.js')], env: userEnv, user: asUser },
      qemuBridgeHelper: { path: BRIDGE_HELPER, env },
    };
    const helperTask: HelperGrantTask = { kind: 'helper-grants', bridge: BRIDGE, aclDirectory: temporaryDirectory(cleanup, 'tgbench-acl'), hostMountNamespace: mountNamespace(), helpers, count, warmup };
    const spawned = await runWorker<Record<string, { fdMs: number[]; usableMs: number[] }>>(helperTask, { namespace: namespace.name, timeoutMs: 60_000 + count * 1000 });

    const series = {
      library: summarize(library.samplesMs),
      tapgateHelper: summarize(spawned.tapgateHelper.usableMs),
      tapgateHelperNode: summarize(spawned.tapgateHelperNode.usableMs),
      qemuBridgeHelper: summarize(spawned.qemuBridgeHelper.usableMs),
    };
    return {
      status: 'measured',
      grantsPerSeries: count,
      warmupPerSeries: warmup,
      series,
      kernelOnly: summarize(kernel.samplesMs),
      helperFdArrival: {
        tapgateHelper: summarize(spawned.tapgateHelper.fdMs),
        tapgateHelperNode: summarize(spawned.tapgateHelperNode.fdMs),
        qemuBridgeHelper: summarize(spawned.qemuBridgeHelper.fdMs),
      },
      speedupOverReference: {
        library: series.qemuBridgeHelper.p50 / series.library.p50,
        tapgateHelper: series.qemuBridgeHelper.p50 / series.tapgateHelper.p50,
        tapgateHelperNode: series.qemuBridgeHelper.p50 / series.tapgateHelperNode.p50,
      },
    };
  } finally {
    await cleanup.run();
  }
}

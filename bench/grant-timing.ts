// Timed grant loops shared by the grant latency and scale benchmarks.

import { randomBytes } from 'node:crypto';
import { openTap } from '../src/client/client.js';
import { closeAll } from '../src/sys/fd.js';
import { createTap } from '../src/sys/tun.js';
import type { RtnlSocket } from '../src/sys/rtnl.js';
import { elapsedMs } from './stats.js';

/** A granted tap: its name and the descriptors the caller owns. */
export interface GrantedTap {
  name: string;
  fds: number[];
}

const REMOVAL_TIMEOUT_MS = 10_000;
const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Waits until the kernel has removed the tap `name`, polling every millisecond.
 * The kernel removes a tap inside the close of its last descriptor. That descriptor may be
 * the daemon's copy, which the daemon closes on a worker thread after sending it, so the
 * removal can still be running when the caller's own close returns.
 * @throws Error when the tap still exists after REMOVAL_TIMEOUT_MS.
 */
export function waitForRemoval(rtnl: RtnlSocket, name: string): void {
  const deadline = Date.now() + REMOVAL_TIMEOUT_MS;
  while (rtnl.getLinkByName(name)) {
    if (Date.now() > deadline) throw new Error(`Tap ${name} still exists ${REMOVAL_TIMEOUT_MS} ms after its descriptors were closed`);
    Atomics.wait(pause, 0, 0, 1);
  }
}

/**
 * Calls `grant` `warmup + count` times and returns the durations of the last `count` calls
 * in ms. Each tap is closed right after it is timed, and the next grant starts once the
 * kernel has removed it. Removing a tap takes tens of milliseconds under the RTNL lock, so a
 * removal still running would otherwise be timed as part of the next grant.
 */
export function timeGrants(count: number, warmup: number, rtnl: RtnlSocket, grant: () => GrantedTap): number[] {
  const samplesMs: number[] = [];
  for (let index = 0; index < warmup + count; index++) {
    const start = process.hrtime.bigint();
    const tap = grant();
    const elapsed = elapsedMs(start);
    closeAll(tap.fds);
    waitForRemoval(rtnl, tap.name);
    if (index >= warmup) samplesMs.push(elapsed);
  }
  return samplesMs;
}

/** Requests one tap from the daemon through the client library, as QEMU's --use-vnet would. */
export function libraryGrant(socketPath: string, network: string): GrantedTap {
  const { grant, fds } = openTap({ network, socketPath, vnetHdr: true });
  return { name: grant.name, fds };
}

/**
 * Makes the kernel calls that the daemon makes for one grant (src/daemon/grant.ts), without
 * the daemon. The calls look up the bridge, create the tap (TUNSETIFF, then if_nametoindex),
 * and set MTU, MAC and alias, attach the tap to the bridge and bring it up in one RTM_NEWLINK. Needs CAP_NET_ADMIN
 * in the bridge's namespace. Returns the tap's descriptors.
 */
export function grantKernelCalls(rtnl: RtnlSocket, bridgeName: string): GrantedTap {
  const bridge = rtnl.getLinkByName(bridgeName);
  if (!bridge) throw new Error(`Bridge ${bridgeName} does not exist`);
  const name = `tgk${randomBytes(4).toString('hex')}`;
  const { fds, ifindex } = createTap({ name, queues: 1, vnetHdr: true });
  try {
    rtnl.setLink(ifindex, { mtu: bridge.mtu ?? 1500, address: 'fe:ff:ff:ff:ff:ff', alias: `tapgate benchmark ${name}`, master: bridge.index, up: true }, name);
    return { name, fds };
  } catch (error) {
    closeAll(fds);
    throw error;
  }
}

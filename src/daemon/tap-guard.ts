// Keeps leased taps as they were granted, and bridges' ports attached across re-creation.
//
// Whoever holds a tap's descriptor can, without any capability, make the tap persistent
// (TUNSETPERSIST), give it an owner (TUNSETOWNER) who may then attach more queues by name, and
// change its host-side MAC (SIOCSIFHWADDR). A legitimate VM does none of these. The daemon
// learns of each from the link notification that follows and undoes it: a persistent or owned
// tap, or one with more queues than granted, is deleted and its lease ends; a changed MAC is
// set back to TAP_HOST_MAC.

import type { Link } from '../sys/rtnl.js';
import { SystemError } from '../sys/errors.js';
import { TAP_HOST_MAC } from './grant.js';
import { endLease, type State } from './handlers.js';

/** Bridges of managed networks by name, with the ifindex last seen; -1 while deleted. */
const bridgeIndexes = new Map<string, number>();

function networkOfBridge(state: State, name: string): string | undefined {
  if (!state.policy.ok) return undefined;
  for (const network of state.policy.policy.networks.values()) {
    if (network.bridge === name) return network.name;
  }
  return undefined;
}

/** Returns why a leased tap must be revoked, or undefined when it is as granted. */
function tamperReason(link: Link, grantedQueues: number | undefined): string | undefined {
  if (!link.tun) return undefined;
  if (link.tun.persist) return 'its holder made it persistent (TUNSETPERSIST)';
  if (link.tun.owner !== undefined) return `its holder gave it an owner, uid ${link.tun.owner} (TUNSETOWNER)`;
  const attached = (link.tun.queues ?? 0) + (link.tun.disabledQueues ?? 0);
  if (grantedQueues !== undefined && attached > grantedQueues) return `it has ${attached} queues, more than the ${grantedQueues} granted`;
  return undefined;
}

function revoke(state: State, link: Link, reason: string): void {
  const lease = state.leases.get(link.index);
  state.logger.log('warn', 'Revoking a tampered tap', { tap: link.name, uid: lease?.uid, reason });
  endLease(state, link.index, `revoked: ${reason}`);
  try {
    state.rtnl.deleteLink(link.index, `tap ${link.name}`);
  } catch (error) {
    if (!(error instanceof SystemError && error.code === 'ENODEV')) state.logger.log('error', 'Deleting a tampered tap failed', { tap: link.name, error: String(error) });
  }
}

/** Checks a notification about a leased tap against the kernel's current state of it. */
function guardTap(state: State, event: Link): void {
  const leased = state.leases.get(event.index);
  if (!leased) return;
  // The grant sets TAP_HOST_MAC before it sends the descriptor, and notifications arrive in
  // order. So a notification with another MAC is one from before the grant configured the tap,
  // and needs no look-up, until a notification has shown TAP_HOST_MAC.
  if (event.address === TAP_HOST_MAC) leased.hostMacSeen = true;
  const macChanged = event.address !== TAP_HOST_MAC && leased.hostMacSeen;
  if (tamperReason(event, leased.queues) === undefined && !macChanged) return;
  // Notifications describe the moment they were sent, so only the current state decides.
  const link = state.rtnl.getLinkByIndex(event.index);
  const lease = state.leases.get(event.index);
  if (!link || !lease) return;
  const reason = tamperReason(link, lease.queues);
  if (reason) return revoke(state, link, reason);
  if (link.address !== TAP_HOST_MAC) {
    state.logger.log('warn', 'Restoring the host-side MAC of a tap its holder changed', { tap: link.name, uid: lease.uid, address: link.address });
    state.rtnl.setLink(link.index, { address: TAP_HOST_MAC }, `tap ${link.name}`);
  }
}

/** Re-attaches the leased taps of a bridge that was deleted and created again. */
function reattach(state: State, bridge: Link, network: string): void {
  let count = 0;
  for (const lease of state.leases.all()) {
    if (lease.bridge !== bridge.name) continue;
    const tap = state.rtnl.getLinkByIndex(lease.ifindex);
    if (!tap || tap.master !== undefined) continue;
    try {
      state.rtnl.setLink(tap.index, { mtu: bridge.mtu, master: bridge.index, up: true }, `tap ${tap.name}`);
      count++;
    } catch (error) {
      state.logger.log('error', 'Re-attaching a tap to its re-created bridge failed', { tap: tap.name, bridge: bridge.name, error: String(error) });
    }
  }
  state.logger.log('info', 'Bridge re-created; its taps are attached again', { bridge: bridge.name, network, taps: count });
}

/** Handles one link notification for taps and network bridges; other links are ignored. */
export function guardLink(state: State, kind: 'new' | 'del', link: Link): void {
  if (link.kind === 'tun') {
    if (kind === 'new' && state.leases.get(link.index)) guardTap(state, link);
    return;
  }
  if (link.kind !== 'bridge') return;
  const network = networkOfBridge(state, link.name);
  if (!network) return;
  if (kind === 'del') {
    bridgeIndexes.set(link.name, -1);
    const detached = state.leases.all().filter((lease) => lease.bridge === link.name).length;
    state.logger.log('warn', 'A network bridge was deleted; its taps stay detached until it is created again', { bridge: link.name, network, taps: detached });
    return;
  }
  const previous = bridgeIndexes.get(link.name);
  bridgeIndexes.set(link.name, link.index);
  if (previous === -1) reattach(state, link, network);
}

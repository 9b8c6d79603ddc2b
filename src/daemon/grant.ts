// Handling of an open-tap request: decide, create, configure, attach and hand over.
//
// The whole sequence is synchronous, so no other request runs between the quota check and the
// lease being recorded: N concurrent requests against a quota of Q yield exactly Q taps.

import { randomBytes } from 'node:crypto';
import { createTap, tunFeatures, IFF_VNET_HDR, TUN_PATH } from '../sys/tun.js';
import { closeAll } from '../sys/fd.js';
import { groupById, groupByName, loginGroups, userById } from '../sys/accounts.js';
import { SystemError, errnoDescription } from '../sys/errors.js';
import type { RtnlSocket, Link } from '../sys/rtnl.js';
import { describeIdentity, type Decision } from '../policy/decide.js';
import { decideRequest } from '../policy/bridge-conf-decide.js';
import { BridgeConfError } from '../policy/bridge-conf.js';
import { describeRule, type Identity, type Network, type Policy } from '../policy/types.js';
import { RequestError, UNKNOWN_MAC, type OpenTapRequest, type TapGrant } from '../protocol/messages.js';
import { encodeAlias, type Lease, type LeaseTable } from './leases.js';

/**
 * The host-side MAC of every tap. A bridge without a fixed address takes the lowest MAC of its
 * ports. The highest unicast value therefore never becomes the bridge's address while any other
 * port exists. QEMU's bridge helper uses the same value for the same reason.
 */
export const TAP_HOST_MAC = 'fe:ff:ff:ff:ff:ff';
const NAME_ATTEMPTS = 16;

export interface GrantContext {
  policy: Policy;
  rtnl: RtnlSocket;
  leases: LeaseTable;
  /** Re-reads the kernel's view of a user's taps, dropping leases whose tap is gone. */
  refreshLeases(uid: number, network: string): void;
  /** Reads a policy file (bridge.conf) with the requester's file permissions. */
  readPolicyFile(identity: Identity, path: string): Buffer;
}

export interface GrantResult {
  grant: TapGrant;
  fds: number[];
  lease: Lease;
  rule: string;
  reason: string;
}

/** Raised when a request is refused; carries what the audit log needs. */
export class GrantRefusal extends RequestError {
  constructor(message: string, code: RequestError['code'], readonly network: Network | undefined, readonly rule: string | undefined) {
    super(message, code);
    this.name = 'GrantRefusal';
  }
}

let vnetHdrSupported: boolean | undefined;

function tunUnavailable(error: SystemError, network: Network): GrantRefusal {
  let hint: string;
  if (error.code === 'ENODEV' || error.code === 'ENOENT' || error.code === 'ENXIO') {
    hint = 'tun module not available: load it with "modprobe tun", or reboot if the kernel was upgraded';
  } else if (error.code === 'EACCES' || error.code === 'EPERM') {
    hint = `blocked by security policy or sandbox: the daemon runs as root but may not open ${TUN_PATH}; allow it in the AppArmor/SELinux profile or the unit's DeviceAllow=`;
  } else {
    hint = `opening ${TUN_PATH} failed`;
  }
  return new GrantRefusal(`Cannot create a tap: ${TUN_PATH}: ${errnoDescription(error.code)} (${error.code}); ${hint}`, 'tun-unavailable', network, undefined);
}

function randomMac(): string {
  const bytes = randomBytes(3);
  return ['52', '54', '00', ...[...bytes].map((byte) => byte.toString(16).padStart(2, '0'))].join(':');
}

/** Returns the bridge's link, or throws GrantRefusal saying it is missing or not a bridge. */
export function checkBridge(link: Link | undefined, network: Network): Link {
  if (!link) {
    throw new GrantRefusal(
      `Bridge ${network.bridge} of network "${network.name}" does not exist; an administrator must create it ` +
      `(ip link add ${network.bridge} type bridge && ip link set ${network.bridge} up) or fix ${network.source}`,
      'bridge-missing', network, undefined);
  }
  if (link.kind !== 'bridge') {
    throw new GrantRefusal(
      `Interface ${network.bridge} of network "${network.name}" is not a bridge (it is ${link.kind ? `a ${link.kind} device` : 'a plain device'}); fix ${network.source}`,
      'not-a-bridge', network, undefined);
  }
  return link;
}

function checkQuota(context: GrantContext, identity: Identity, network: Network, maxTaps: number, rule: string): void {
  if (maxTaps === 0) {
    throw new GrantRefusal(
      `Tap quota for ${describeIdentity(identity)} on network "${network.name}" (bridge ${network.bridge}) is 0: ` +
      `max_taps = 0 in the ${rule}; ask an administrator for a rule with max_taps of 1 or more`,
      'quota', network, rule);
  }
  if (context.leases.count(identity.uid, network.name) >= maxTaps) context.refreshLeases(identity.uid, network.name);
  const count = context.leases.count(identity.uid, network.name);
  if (count >= maxTaps) {
    throw new GrantRefusal(
      `Tap quota reached for ${describeIdentity(identity)} on network "${network.name}" (bridge ${network.bridge}): ` +
      `${count} of ${maxTaps} taps in use (limit from the ${rule}); stop a VM on this network or ask for a higher max_taps`,
      'quota', network, rule);
  }
}

function randomLeaseId(): string {
  return randomBytes(4).toString('hex');
}

/**
 * Creates a tap named `tg` + a lease id, trying another id when the name is taken.
 * IFF_TUN_EXCL makes an existing interface of that name fail with EBUSY instead of being
 * adopted, so a device tapgate did not create is never reused or touched.
 * @param nextId the lease id generator; tests pass one that returns a taken name first.
 * @throws SystemError for any failure other than a name collision, or after NAME_ATTEMPTS collisions.
 */
export function createUniqueTap(queues: number, vnetHdr: boolean, nextId: () => string = randomLeaseId): { id: string; name: string; ifindex: number; fds: number[] } {
  const taken: string[] = [];
  for (;;) {
    const id = nextId();
    const name = `tg${id}`;
    try {
      const tap = createTap({ name, queues, vnetHdr });
      return { id, name, ifindex: tap.ifindex, fds: tap.fds };
    } catch (error) {
      if (!(error instanceof SystemError && error.code === 'EBUSY')) throw error;
      taken.push(name);
      if (taken.length >= NAME_ATTEMPTS) {
        throw new SystemError('ioctl(TUNSETIFF)', `taps ${taken.join(', ')}`, error.errno,
          `all ${NAME_ATTEMPTS} names tried already exist; remove stale interfaces named tg* that tapgate did not create`);
      }
    }
  }
}

function supportsVnetHdr(): boolean {
  vnetHdrSupported ??= (tunFeatures() & IFF_VNET_HDR) !== 0;
  return vnetHdrSupported;
}

/**
 * Configures a new tap and attaches it to the bridge in one RTM_NEWLINK, which saves a round
 * trip under RTNL on every grant. The kernel's do_setlink() applies IFLA_ADDRESS, IFLA_MTU and
 * IFLA_IFALIAS before IFLA_MASTER and the flags (in the 3.x to 6.x sources read for this), so
 * the tap joins with the bridge's MTU and the bridge's MTU never drops. Whether IFF_UP comes
 * before or after IFLA_MASTER changed between versions, and a bridge accepts both orders.
 */
function attachTap(context: GrantContext, tap: { name: string; ifindex: number }, bridge: Link, network: Network, alias: string): void {
  const mtu = bridge.mtu ?? 1500;
  try {
    context.rtnl.setLink(tap.ifindex, { mtu, address: TAP_HOST_MAC, alias, master: bridge.index, up: true }, `tap ${tap.name}`);
  } catch (error) {
    // The bridge may have been deleted since checkBridge: report that instead of ENODEV.
    const current = context.rtnl.getLinkByName(network.bridge);
    if (current?.index !== bridge.index) {
      throw new GrantRefusal(
        `Bridge ${network.bridge} of network "${network.name}" does not exist any more: it was deleted while tap ${tap.name} ` +
        'was being attached; try again once an administrator has re-created it', 'bridge-missing', network, undefined);
    }
    const reason = error instanceof SystemError ? error.message : String(error);
    throw new GrantRefusal(
      `Setting tap ${tap.name} to the MTU ${mtu} of bridge ${network.bridge} (tap MTU is 1500) and attaching it failed: ${reason}`, 'device-error', network, undefined);
  }
}

/**
 * Decides a request for `requested` (a network or bridge name) under the loaded policy and,
 * when it has a [bridge_conf] table, the bridge.conf files the requester may read.
 * @throws GrantRefusal with code `policy-error` when bridge.conf cannot be used.
 */
export function decideForRequester(context: GrantContext, identity: Identity, requested: string): Decision {
  let decision: Decision;
  try {
    decision = decideRequest(context.policy, identity, requested, (path) => context.readPolicyFile(identity, path));
  } catch (error) {
    if (error instanceof BridgeConfError) throw new GrantRefusal(error.message, 'policy-error', undefined, undefined);
    throw error;
  }
  const defaultDeny = !decision.allowed && decision.code === 'denied' && decision.rule === undefined;
  const group = defaultDeny && decision.network ? staleGroup(context.policy, identity, decision.network) : undefined;
  if (!group) return decision;
  return {
    ...decision,
    reason: `${decision.reason}; user ${identity.user} is in group ${group} according to the user database, but this session is not; ` +
      `log in again (or run "newgrp ${group}") to use it`,
  };
}

/**
 * Finds a group that an [[allow]] rule for `network` names, that the group database lists the
 * requester in, but that the connection does not hold: the user was added to it after the
 * session started. Returns the group's name, or undefined (also when an NSS look-up fails,
 * because the hint is only advice).
 */
function staleGroup(policy: Policy, identity: Identity, network: Network): string | undefined {
  if (!identity.user || !policy.networks.has(network.name)) return undefined;
  const named = policy.rules
    .filter((rule) => rule.kind === 'allow' && (rule.networks.includes('*') || rule.networks.includes(network.name)))
    .flatMap((rule) => rule.groups)
    .filter((group) => group !== '*');
  if (named.length === 0) return undefined;
  try {
    const held = new Set([identity.gid, ...identity.groups]);
    const login = new Set(loginGroups(identity.user, userById(identity.uid)?.gid ?? identity.gid));
    for (const group of named) {
      const entry = /^\d+$/.test(group) ? groupById(Number(group)) : groupByName(group);
      if (entry && login.has(entry.gid) && !held.has(entry.gid)) return entry.name;
    }
  } catch (error) {
    if (!(error instanceof SystemError)) throw error;
  }
  return undefined;
}

/**
 * Grants an open-tap request or throws GrantRefusal. On success the caller owns `fds` and
 * must close them after sending; the daemon keeps none, so the tap lives exactly as long as
 * the requester's copies.
 */
export function grantTap(context: GrantContext, identity: Identity, request: OpenTapRequest): GrantResult {
  const decision = decideForRequester(context, identity, request.network);
  if (!decision.allowed || !decision.network || !decision.limits || !decision.rule) {
    throw new GrantRefusal(decision.reason, decision.code === 'unknown-network' ? 'unknown-network' : 'denied', decision.network, decision.rule && describeRule(decision.rule));
  }
  const network = decision.network;
  const rule = describeRule(decision.rule);
  if (request.queues > decision.limits.maxQueues) {
    throw new GrantRefusal(`Requested ${request.queues} queues, but the maximum for network "${network.name}" is ${decision.limits.maxQueues} (max_queues of the ${rule})`, 'denied', network, rule);
  }
  // The bridge comes first: when it is missing, that is the cause to report, not a full quota.
  const bridge = checkBridge(context.rtnl.getLinkByName(network.bridge), network);
  checkQuota(context, identity, network, decision.limits.maxTaps, rule);

  let created: ReturnType<typeof createUniqueTap>;
  let vnetHdr: boolean;
  try {
    vnetHdr = request.vnetHdr && supportsVnetHdr();
    created = createUniqueTap(request.queues, vnetHdr);
  } catch (error) {
    if (error instanceof SystemError && error.operation === 'open') throw tunUnavailable(error, network);
    throw error;
  }

  try {
    const mac = request.mac ?? (request.macChosenByVmm ? UNKNOWN_MAC : randomMac());
    attachTap(context, created, bridge, network, encodeAlias({ uid: identity.uid, network: network.name, id: created.id, mac, queues: request.queues }));
    const lease: Lease = {
      id: created.id, tap: created.name, ifindex: created.ifindex, uid: identity.uid, network: network.name,
      bridge: network.bridge, mac, queues: request.queues, pid: identity.pid, since: new Date().toISOString(), hostMacSeen: false,
    };
    context.leases.add(lease);
    const grant: TapGrant = {
      name: created.name, ifindex: created.ifindex, network: network.name, bridge: network.bridge,
      mtu: bridge.mtu ?? 1500, mac, vnetHdr, queues: request.queues, lease: created.id,
    };
    return { grant, fds: created.fds, lease, rule, reason: decision.reason };
  } catch (error) {
    // Closing the only descriptors removes the non-persistent tap and its bridge port.
    closeAll(created.fds);
    throw error;
  }
}

// The daemon's shared state and the handlers for each request operation.

import { SystemError } from '../sys/errors.js';
import { tunFeatures, TUN_PATH } from '../sys/tun.js';
import { AF_UNSPEC, type Link, type RtnlSocket } from '../sys/rtnl.js';
import { PROTOCOL_VERSION, RequestError, UNKNOWN_MAC, parseRequest, type ErrorCode, type OpenTapRequest, type Reply } from '../protocol/messages.js';
import type { Identity } from '../policy/types.js';
import type { Logger } from './log.js';
import type { AuditLog } from './audit.js';
import { decodeAlias, type LeaseTable } from './leases.js';
import { readFileAs } from '../sys/credentials.js';
import { GrantRefusal, grantTap, type GrantContext } from './grant.js';
import { diagnose } from './diagnose.js';
import { currentWarnings, reloadPolicy, type PolicyState, type ReloadFailure } from './policy-store.js';
import { userName } from './identity.js';
import { explainAccess } from './explain.js';
import type { HandlerResult } from './server.js';
import type { DaemonOptions } from './main.js';

export interface State {
  options: DaemonOptions;
  policy: PolicyState;
  /** When the policy in force was loaded (ISO 8601); undefined while none is valid. */
  policyLoadedAt: string | undefined;
  /** The last reload, when it failed and left the previous policy in force. */
  lastReloadFailure: ReloadFailure | undefined;
  rtnl: RtnlSocket;
  leases: LeaseTable;
  audit: AuditLog;
  logger: Logger;
  tunProblem: string | undefined;
}

export function probeTun(): string | undefined {
  try {
    tunFeatures();
    return undefined;
  } catch (error) {
    return error instanceof SystemError ? `${TUN_PATH}: ${error.message}` : String(error);
  }
}

/** Adopts every tap that carries a tapgate alias, so quotas survive a daemon restart. */
export function reconcile(state: State): void {
  const seen = new Set<number>();
  for (const link of state.rtnl.listLinks()) {
    const owner = link.kind === 'tun' ? decodeAlias(link.alias) : undefined;
    if (!owner) continue;
    seen.add(link.index);
    const known = state.leases.get(link.index);
    if (known) {
      // Notifications may have been lost, the one with TAP_HOST_MAC among them, so from now on
      // the guard looks up every tap whose notification shows another MAC.
      known.hostMacSeen = true;
      continue;
    }
    const bridge = state.policy.ok ? state.policy.policy.networks.get(owner.network)?.bridge ?? '' : '';
    state.leases.add({ ...owner, tap: link.name, ifindex: link.index, bridge, pid: null, since: new Date().toISOString(), hostMacSeen: true });
    state.logger.log('info', 'Adopted a live tap', { tap: link.name, uid: owner.uid, network: owner.network, lease: owner.id });
  }
  for (const lease of state.leases.all()) {
    if (!seen.has(lease.ifindex)) endLease(state, lease.ifindex, 'the tap was gone when the daemon re-read the link list');
  }
}

/**
 * Ends the lease of a tap that an RTM_DELLINK named, once the kernel confirms the tap is gone.
 * A bridge also sends RTM_DELLINK (family AF_BRIDGE) for each port it loses, as when the bridge
 * is deleted. The tap itself lives on with its VM, so it must keep counting against the quota.
 */
export function linkRemoved(state: State, link: Link): void {
  if (!state.leases.get(link.index)) return;
  // The device's own RTM_DELLINK (family AF_UNSPEC) is sent only as it is unregistered, so
  // only a bridge port's notification needs the look-up.
  if (link.family !== AF_UNSPEC && state.rtnl.getLinkByIndex(link.index)) return;
  endLease(state, link.index, 'the tap was removed (its last descriptor closed)');
}

export function endLease(state: State, ifindex: number, reason: string): void {
  const lease = state.leases.remove(ifindex);
  if (!lease) return;
  state.audit.record({
    event: 'lease-end', uid: lease.uid, user: userName(lease.uid) ?? null, pid: lease.pid, request: null, decision: 'ended', rule: null, reason,
    network: lease.network, bridge: lease.bridge, tap: lease.tap, mac: lease.mac === UNKNOWN_MAC ? null : lease.mac, lease: lease.id,
  });
}

function grantContext(state: State): GrantContext {
  if (!state.policy.ok) throw new GrantRefusal(`The tapgate policy is invalid, so every request is denied until it is fixed: ${state.policy.error}`, 'policy-error', undefined, undefined);
  return {
    policy: state.policy.policy,
    rtnl: state.rtnl,
    leases: state.leases,
    refreshLeases(uid, network) {
      for (const lease of state.leases.owned(uid, network)) {
        if (!state.rtnl.getLinkByIndex(lease.ifindex)) endLease(state, lease.ifindex, 'the tap disappeared');
      }
    },
    readPolicyFile: readFileAs,
  };
}

/** Refusals decided by the policy or the quota; the rest are failures the requester did not cause. */
const POLICY_REFUSALS = new Set<ErrorCode>(['denied', 'unknown-network', 'quota', 'policy-error']);

function handleOpenTap(state: State, identity: Identity, request: OpenTapRequest): HandlerResult {
  const base = { event: 'decision' as const, uid: identity.uid, user: identity.user ?? null, pid: identity.pid, request: { ...request } };
  try {
    const result = grantTap(grantContext(state), identity, request);
    state.audit.record({
      ...base, decision: 'granted', rule: result.rule, reason: result.reason, network: result.grant.network,
      bridge: result.grant.bridge, tap: result.grant.name, mac: result.grant.mac === UNKNOWN_MAC ? null : result.grant.mac, lease: result.grant.lease,
    });
    return { reply: { version: PROTOCOL_VERSION, ok: true, op: 'open-tap', tap: result.grant }, fds: result.fds };
  } catch (error) {
    const refusal = error instanceof GrantRefusal;
    const message = error instanceof Error ? error.message : String(error);
    state.audit.record({
      ...base, decision: refusal && POLICY_REFUSALS.has(error.code) ? 'denied' : 'error',
      rule: refusal ? error.rule ?? null : null, reason: message, network: refusal ? error.network?.name ?? null : null,
      bridge: refusal ? error.network?.bridge ?? null : null, tap: null, mac: null, lease: null,
    });
    if (refusal) throw error;
    throw new GrantRefusal(`Creating the tap failed: ${message}`, 'device-error', undefined, undefined);
  }
}

function policyStatus(state: State): Record<string, unknown> {
  const common = { path: state.options.config, lastReloadFailure: state.lastReloadFailure ?? null };
  if (!state.policy.ok) return { ...common, valid: false, error: state.policy.error };
  return { ...common, valid: true, loadedAt: state.policyLoadedAt ?? null, warnings: currentWarnings(state.policy.policy, state.rtnl) };
}

function handleStatus(state: State, identity: Identity): Reply {
  const leases = state.leases.all().filter((lease) => identity.uid === 0 || lease.uid === identity.uid);
  return {
    version: PROTOCOL_VERSION, ok: true, op: 'status',
    pid: process.pid,
    policy: policyStatus(state),
    tun: state.tunProblem ? { ok: false, problem: state.tunProblem } : { ok: true },
    networks: state.policy.ok ? [...state.policy.policy.networks.values()].map(({ name, bridge }) => ({ name, bridge })) : [],
    leases,
    totalLeases: state.leases.size,
  };
}

function handleReload(state: State, identity: Identity): Reply {
  if (identity.uid !== 0) throw new RequestError('Only root may reload the policy; run "sudo tapgate policy reload"', 'denied');
  state.logger.log('info', 'Policy reload requested', { uid: identity.uid, pid: identity.pid });
  const result = reloadPolicy(state);
  if (!result.ok) throw new RequestError(`The policy was not reloaded and the previous one stays in force: ${result.error}`, 'policy-error');
  return {
    version: PROTOCOL_VERSION, ok: true, op: 'reload', path: result.policy.path, networks: result.policy.networks.size,
    rules: result.policy.rules.length, warnings: currentWarnings(result.policy, state.rtnl),
  };
}

export function dispatch(state: State, identity: Identity, body: Buffer): HandlerResult {
  const request = parseRequest(body);
  if (request.op === 'open-tap') return handleOpenTap(state, identity, request);
  if (request.op === 'status') return { reply: handleStatus(state, identity) };
  if (request.op === 'diagnose') {
    return { reply: diagnose({ policy: state.policy.ok ? state.policy.policy : undefined, rtnl: state.rtnl, logger: state.logger }, identity, request.network) };
  }
  if (request.op === 'reload') return { reply: handleReload(state, identity) };
  return { reply: explainAccess(grantContext(state), identity, request) };
}


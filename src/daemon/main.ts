// The tapgate daemon: start-up, request dispatch, reloads and shutdown.
//
// Privileges: the daemon needs CAP_NET_ADMIN in the network namespace where taps are created
// (TUNSETIFF, RTM_NEWLINK on taps). It holds no tap descriptor after a reply is sent.
// NOTE: it does not yet drop other capabilities when started as full root outside systemd;
// the shipped unit file restricts it to CAP_NET_ADMIN instead.

import { existsSync, mkdirSync, chmodSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Server } from 'node:net';
import { RtnlSocket } from '../sys/rtnl.js';
import { connectUnix } from '../sys/unix.js';
import { closeFd } from '../sys/fd.js';
import { SystemError } from '../sys/errors.js';
import { tunFeatures, TUN_PATH } from '../sys/tun.js';
import { PROTOCOL_VERSION, parseRequest, type OpenTapRequest, type Reply } from '../protocol/messages.js';
import { decide } from '../policy/decide.js';
import { describeRule, type Identity } from '../policy/types.js';
import { createLogger, type Level, type Logger } from './log.js';
import { AuditLog } from './audit.js';
import { LeaseTable, decodeAlias } from './leases.js';
import { GrantRefusal, grantTap, type GrantContext } from './grant.js';
import { loadPolicy, type PolicyState } from './policy-store.js';
import { startServer, type HandlerResult } from './server.js';
import { watchLinks } from './link-watch.js';

export interface DaemonOptions {
  config: string;
  socket: string;
  logLevel: Level;
}

interface State {
  options: DaemonOptions;
  policy: PolicyState;
  rtnl: RtnlSocket;
  leases: LeaseTable;
  audit: AuditLog;
  logger: Logger;
  tunProblem: string | undefined;
}

function probeTun(): string | undefined {
  try {
    tunFeatures();
    return undefined;
  } catch (error) {
    return error instanceof SystemError ? `${TUN_PATH}: ${error.message}` : String(error);
  }
}

/** Adopts every tap that carries a tapgate alias, so quotas survive a daemon restart. */
function reconcile(state: State): void {
  const seen = new Set<number>();
  for (const link of state.rtnl.listLinks()) {
    const owner = link.kind === 'tun' ? decodeAlias(link.alias) : undefined;
    if (!owner) continue;
    seen.add(link.index);
    if (state.leases.get(link.index)) continue;
    const bridge = state.policy.ok ? state.policy.policy.networks.get(owner.network)?.bridge ?? '' : '';
    state.leases.add({ ...owner, tap: link.name, ifindex: link.index, bridge, pid: null, since: new Date().toISOString() });
    state.logger.log('info', 'Adopted a live tap', { tap: link.name, uid: owner.uid, network: owner.network, lease: owner.id });
  }
  for (const lease of state.leases.all()) {
    if (!seen.has(lease.ifindex)) endLease(state, lease.ifindex, 'the tap was gone when the daemon re-read the link list');
  }
}

function endLease(state: State, ifindex: number, reason: string): void {
  const lease = state.leases.remove(ifindex);
  if (!lease) return;
  state.audit.record({
    event: 'lease-end', uid: lease.uid, user: null, pid: lease.pid, request: null, decision: 'ended', rule: null, reason,
    network: lease.network, bridge: lease.bridge, tap: lease.tap, mac: lease.mac, lease: lease.id,
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
  };
}

function handleOpenTap(state: State, identity: Identity, request: OpenTapRequest): HandlerResult {
  const base = { event: 'decision' as const, uid: identity.uid, user: identity.user ?? null, pid: identity.pid, request: { ...request } };
  try {
    const result = grantTap(grantContext(state), identity, request);
    state.audit.record({
      ...base, decision: 'granted', rule: result.rule, reason: result.reason, network: result.grant.network,
      bridge: result.grant.bridge, tap: result.grant.name, mac: result.grant.mac, lease: result.grant.lease,
    });
    return { reply: { version: PROTOCOL_VERSION, ok: true, op: 'open-tap', tap: result.grant }, fds: result.fds };
  } catch (error) {
    const refusal = error instanceof GrantRefusal;
    const message = error instanceof Error ? error.message : String(error);
    state.audit.record({
      ...base, decision: refusal && error.code !== 'device-error' && error.code !== 'tun-unavailable' ? 'denied' : 'error',
      rule: refusal ? error.rule ?? null : null, reason: message, network: refusal ? error.network?.name ?? null : null,
      bridge: refusal ? error.network?.bridge ?? null : null, tap: null, mac: null, lease: null,
    });
    if (refusal) throw error;
    throw new GrantRefusal(`Creating the tap failed: ${message}`, 'device-error', undefined, undefined);
  }
}

function handleStatus(state: State, identity: Identity): Reply {
  const leases = state.leases.all().filter((lease) => identity.uid === 0 || lease.uid === identity.uid);
  return {
    version: PROTOCOL_VERSION, ok: true, op: 'status',
    pid: process.pid,
    policy: state.policy.ok ? { path: state.options.config, valid: true, warnings: state.policy.policy.warnings } : { path: state.options.config, valid: false, error: state.policy.error },
    tun: state.tunProblem ? { ok: false, problem: state.tunProblem } : { ok: true },
    networks: state.policy.ok ? [...state.policy.policy.networks.values()].map(({ name, bridge }) => ({ name, bridge })) : [],
    leases,
    totalLeases: state.leases.size,
  };
}

function handleCheck(state: State, identity: Identity, network: string): Reply {
  const context = grantContext(state);
  const decision = decide(context.policy, identity, network);
  return {
    version: PROTOCOL_VERSION, ok: true, op: 'check', allowed: decision.allowed, reason: decision.reason,
    rule: decision.rule ? describeRule(decision.rule) : null, limits: decision.limits ?? null,
    inUse: decision.network ? state.leases.count(identity.uid, decision.network.name) : 0,
  };
}

function dispatch(state: State, identity: Identity, body: Buffer): HandlerResult {
  const request = parseRequest(body);
  if (request.op === 'open-tap') return handleOpenTap(state, identity, request);
  if (request.op === 'status') return { reply: handleStatus(state, identity) };
  return { reply: handleCheck(state, identity, request.network) };
}

/** Removes a socket file left by a daemon that died; refuses to steal one that answers. */
function claimSocketPath(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (!existsSync(path)) return;
  try {
    closeFd(connectUnix(path, 1000));
  } catch {
    unlinkSync(path);
    return;
  }
  throw new Error(`Another daemon is already listening on ${path}; stop it first or choose another --socket`);
}

function reload(state: State): void {
  const next = loadPolicy(state.options.config);
  if (!next.ok) {
    state.logger.log('error', 'Policy reload failed; the previous policy stays in force', { path: state.options.config, error: next.error });
    if (!state.policy.ok) state.policy = next;
    return;
  }
  state.policy = next;
  state.audit.setPath(next.policy.daemon.auditLog);
  state.logger.log('info', 'Policy reloaded', { path: state.options.config, networks: next.policy.networks.size, rules: next.policy.rules.length });
}

/** Runs the daemon until SIGTERM or SIGINT. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const logger = createLogger(options.logLevel);
  const policy = loadPolicy(options.config);
  if (!policy.ok) logger.log('error', 'The policy is invalid; every request is denied until it is fixed and reloaded', { error: policy.error });
  const state: State = {
    options, policy, logger,
    rtnl: new RtnlSocket(),
    leases: new LeaseTable(),
    audit: new AuditLog(policy.ok ? policy.policy.daemon.auditLog : undefined, logger),
    tunProblem: probeTun(),
  };
  if (state.tunProblem) logger.log('error', 'Taps cannot be created until this is fixed', { problem: state.tunProblem });

  const stopWatching = watchLinks(
    (events) => {
      for (const event of events) if (event.kind === 'del') endLease(state, event.link.index, 'the tap was removed (its last descriptor closed)');
    },
    (error) => {
      logger.log('warn', 'Link notifications were lost; re-reading the link list', { error: String(error) });
      reconcile(state);
    },
  );
  reconcile(state);

  claimSocketPath(options.socket);
  const server: Server = await startServer(options.socket, (identity, body) => {
    if (state.tunProblem) state.tunProblem = probeTun();
    return dispatch(state, identity, body);
  }, logger);
  // Anyone may connect: the policy, not the socket's mode, decides what each caller gets.
  chmodSync(options.socket, 0o666);
  logger.log('info', 'Daemon started', { socket: options.socket, config: options.config, pid: process.pid, leases: state.leases.size });

  process.on('SIGHUP', () => reload(state));
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.log('info', 'Daemon stopping; taps stay with their VMs', { signal });
      stopWatching();
      server.close();
      try { unlinkSync(options.socket); } catch { /* already gone */ }
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

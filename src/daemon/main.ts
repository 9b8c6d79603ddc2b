// The tapgate daemon: start-up, request dispatch, reloads and shutdown.
//
// Privileges: the daemon needs CAP_NET_ADMIN in the network namespace where taps are created
// (TUNSETIFF, RTM_NEWLINK on taps), and CAP_SETUID and CAP_SETGID to read bridge.conf files with
// the requester's credentials. Started as root with more, it re-executes itself with only these
// three (see restrictCapabilities). It holds no tap descriptor after a reply is sent.

import { existsSync, mkdirSync, chmodSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Server } from 'node:net';
import { RtnlSocket } from '../sys/rtnl.js';
import { connectUnix } from '../sys/unix.js';
import { closeFd } from '../sys/fd.js';
import { createLogger, type Level } from './log.js';
import { SystemError } from '../sys/errors.js';
import { AuditLog } from './audit.js';
import { LeaseTable } from './leases.js';
import { currentWarnings, loadPolicy, reloadPolicy } from './policy-store.js';
import { startServer } from './server.js';
import { DEFAULT_DAEMON } from '../policy/types.js';
import { watchLinks } from './link-watch.js';
import { guardLink } from './tap-guard.js';
import { dispatch, linkRemoved, probeTun, reconcile, type State } from './handlers.js';
import { restrictCapabilities } from './privileges.js';
import { DaemonStartError } from './start-error.js';

export interface DaemonOptions {
  config: string;
  socket: string;
  logLevel: Level;
  /** Keep every capability the daemon was started with, instead of re-executing with only the needed ones. */
  keepCapabilities: boolean;
}

export { DaemonStartError };

/** Removes a socket file left by a daemon that died; raises when a live daemon accepts connections on it. */
function claimSocketPath(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (!existsSync(path)) return;
  try {
    closeFd(connectUnix(path, 1000));
  } catch {
    unlinkSync(path);
    return;
  }
  throw new DaemonStartError(`Another daemon is already listening on ${path}; stop it first or choose another --socket`);
}

/** Runs the daemon until SIGTERM or SIGINT. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const logger = createLogger(options.logLevel);
  try {
    restrictCapabilities(logger, options.keepCapabilities);
  } catch (error) {
    if (!(error instanceof SystemError)) throw error;
    throw new DaemonStartError(`Checking the daemon's capabilities failed: ${error.message}`);
  }
  const policy = loadPolicy(options.config);
  if (!policy.ok) logger.log('error', 'The policy is invalid; every request is denied until it is fixed and reloaded', { error: policy.error });
  const state: State = {
    options, policy, logger,
    policyLoadedAt: policy.ok ? new Date().toISOString() : undefined,
    lastReloadFailure: undefined,
    rtnl: new RtnlSocket(),
    leases: new LeaseTable(),
    audit: new AuditLog(policy.ok ? policy.policy.daemon.auditLog : undefined, logger),
    tunProblem: probeTun(),
  };
  if (state.tunProblem) logger.log('error', 'Taps cannot be created until this is fixed', { problem: state.tunProblem });
  if (policy.ok) {
    logger.log('info', 'Policy loaded', {
      path: options.config, networks: policy.policy.networks.size, rules: policy.policy.rules.length, warnings: currentWarnings(policy.policy, state.rtnl),
    });
  }

  const stopWatching = watchLinks(
    (events) => {
      for (const event of events) {
        try {
          if (event.kind === 'del') linkRemoved(state, event.link);
          guardLink(state, event.kind, event.link);
        } catch (error) {
          logger.log('error', 'Handling a link notification failed', { ifindex: event.link.index, name: event.link.name, error: String(error) });
        }
      }
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
  }, logger, () => (state.policy.ok ? state.policy.policy.daemon : DEFAULT_DAEMON));
  // Anyone may connect: the policy, not the socket's mode, decides what each caller gets.
  chmodSync(options.socket, 0o666);
  logger.log('info', 'Daemon started', { socket: options.socket, config: options.config, pid: process.pid, leases: state.leases.size });

  process.on('SIGHUP', () => reloadPolicy(state));
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

// Loads the policy file and keeps the last valid policy in force across reloads.

import { readFileSync } from 'node:fs';
import { parsePolicy, PolicyError } from '../policy/config.js';
import { bridgeWarnings, nameWarnings } from '../policy/warnings.js';
import type { Policy } from '../policy/types.js';
import { nssNameLookups } from '../sys/accounts.js';
import type { RtnlSocket } from '../sys/rtnl.js';
import type { AuditLog } from './audit.js';
import type { Logger } from './log.js';

/** A loaded policy, or why the file cannot be used: `error` is one message, `problems` each FILE:LINE: message. */
export type PolicyState = { ok: true; policy: Policy } | { ok: false; error: string; problems: string[] };

/** A reload that left the previous policy in force: when it happened and why. */
export interface ReloadFailure {
  at: string;
  error: string;
}

/**
 * Reads and parses a policy file and adds a warning for each rule name that NSS does not know.
 * A missing or unreadable file is reported with the path and the reason (`not found`,
 * `permission denied`), never as a parse error.
 */
export function loadPolicy(path: string): PolicyState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reasons: Record<string, string> = { ENOENT: 'not found', EACCES: 'permission denied', EISDIR: 'is a directory' };
    const reason = (code && reasons[code]) ?? String(error);
    const message = `Policy file ${path}: ${reason}`;
    return { ok: false, error: message, problems: [message] };
  }
  try {
    const policy = parsePolicy(text, path);
    return { ok: true, policy: { ...policy, warnings: [...policy.warnings, ...nameWarnings(policy, nssNameLookups())] } };
  } catch (error) {
    if (error instanceof PolicyError) return { ok: false, error: error.message, problems: error.problems };
    throw error;
  }
}

/**
 * Returns the policy's warnings with one for each network whose bridge is missing or is not a
 * bridge now. Bridges come and go, so these are computed on each call rather than kept.
 */
export function currentWarnings(policy: Policy, rtnl: RtnlSocket): string[] {
  return [...policy.warnings, ...bridgeWarnings(policy, (name) => rtnl.getLinkByName(name))];
}

/** The parts of the daemon's state that a reload reads and replaces. */
export interface ReloadTarget {
  options: { config: string };
  policy: PolicyState;
  /** When the policy in force was loaded, as ISO 8601; undefined while no valid policy was ever loaded. */
  policyLoadedAt: string | undefined;
  /** The last reload, when it failed; cleared by a successful one. */
  lastReloadFailure: ReloadFailure | undefined;
  rtnl: RtnlSocket;
  audit: AuditLog;
  logger: Logger;
}

/**
 * Re-reads the policy file (on SIGHUP or a `reload` request) and returns the new policy or why
 * the file cannot be used. An invalid file is logged and leaves the previous valid policy in force.
 */
export function reloadPolicy(target: ReloadTarget): PolicyState {
  const next = loadPolicy(target.options.config);
  const now = new Date().toISOString();
  if (!next.ok) {
    target.logger.log('error', 'Policy reload failed; the previous policy stays in force', { path: target.options.config, error: next.error });
    target.lastReloadFailure = { at: now, error: next.error };
    if (!target.policy.ok) target.policy = next;
    return next;
  }
  target.policy = next;
  target.policyLoadedAt = now;
  target.lastReloadFailure = undefined;
  target.audit.setPath(next.policy.daemon.auditLog);
  target.logger.log('info', 'Policy reloaded', {
    path: target.options.config, networks: next.policy.networks.size, rules: next.policy.rules.length, warnings: currentWarnings(next.policy, target.rtnl),
  });
  return next;
}

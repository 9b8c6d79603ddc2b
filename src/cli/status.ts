// `tapgate status` and `tapgate check`: what the daemon reports to the calling user.

import { parseArgs } from 'node:util';
import { call } from '../client/client.js';

function fail(message: string): number {
  process.stderr.write(`tapgate: ${message}\n`);
  return 1;
}

/** The `policy` member of a status reply; daemons older than this client omit the optional parts. */
export interface PolicyStatus {
  path: string;
  valid: boolean;
  error?: string;
  loadedAt?: string | null;
  warnings?: string[];
  lastReloadFailure?: { at: string; error: string } | null;
}

/** Formats the policy line of `tapgate status`, including a failed reload that left the old policy in force. */
export function describePolicy(policy: PolicyStatus): string {
  const failure = policy.lastReloadFailure;
  if (!policy.valid) {
    const reload = failure ? `; last reload at ${failure.at} failed` : '';
    return `${policy.path} INVALID: ${policy.error}${reload}; every request is denied until a valid policy is loaded`;
  }
  const loaded = policy.loadedAt ? `, loaded at ${policy.loadedAt}` : '';
  if (!failure) return `${policy.path} valid${loaded}`;
  const since = policy.loadedAt ? ` loaded at ${policy.loadedAt}` : '';
  return `${policy.path} valid${loaded}; last reload at ${failure.at} FAILED: ${failure.error}; the policy${since} stays in force`;
}

export function statusCommand(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true });
  const { reply } = call({ op: 'status' });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
    return reply.ok ? 0 : 1;
  }
  if (!reply.ok) return fail(reply.error.message);
  const status = reply as unknown as {
    pid: number; policy: PolicyStatus; tun: { ok: boolean; problem?: string };
    networks: { name: string; bridge: string }[]; leases: { tap: string; network: string; mac: string; uid: number; since: string }[];
  };
  const lines = [
    `daemon:   running (pid ${status.pid})`,
    `policy:   ${describePolicy(status.policy)}`,
    ...(status.policy.warnings ?? []).map((warning) => `  warning: ${warning}`),
    `tun:      ${status.tun.ok ? 'ok' : status.tun.problem}`,
    `networks: ${status.networks.map((network) => `${network.name} (bridge ${network.bridge})`).join(', ') || 'none'}`,
    `taps:     ${status.leases.length === 0 ? 'none' : ''}`,
    ...status.leases.map((lease) => `  ${lease.tap}  network ${lease.network}  guest MAC ${lease.mac}  uid ${lease.uid}  since ${lease.since}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return status.policy.valid && !status.policy.lastReloadFailure && status.tun.ok ? 0 : 1;
}

interface CheckReply {
  user: { uid: number; name: string | null; description: string };
  network: { name: string; bridge: string } | null;
  allowed: boolean;
  reason: string;
  rule: string | null;
  limits: { maxTaps: number; maxQueues: number; vhost: boolean; unfiltered: boolean } | null;
  inUse: number;
  quotaFull: boolean;
  bridgeProblem: string | null;
  wouldGrant: boolean;
}

const yesNo = (value: boolean): string => (value ? 'yes' : 'no');

/** Formats a `check` reply as the lines `tapgate check` prints. */
export function formatCheck(check: CheckReply): string[] {
  const lines = [
    `decision: ${check.allowed ? 'allowed' : 'denied'}`,
    `user:     ${check.user.description}`,
    `network:  ${check.network ? `${check.network.name} (bridge ${check.network.bridge})` : 'unknown'}`,
    `rule:     ${check.rule ?? (check.network ? 'none matches, so the default deny applies' : 'none')}`,
    `reason:   ${check.reason}`,
  ];
  if (check.limits) {
    const { maxTaps, maxQueues, vhost, unfiltered } = check.limits;
    lines.push(`limits:   max_taps ${maxTaps}, max_queues ${maxQueues}, vhost ${yesNo(vhost)}, unfiltered ${yesNo(unfiltered)}`);
    const full = check.quotaFull ? '; the quota is full, so a new request would be refused' : '';
    lines.push(`usage:    ${check.inUse} of ${maxTaps} taps in use${full}`);
  } else if (check.network) {
    lines.push(`usage:    ${check.inUse} taps in use`);
  }
  if (check.bridgeProblem) lines.push(`bridge:   ${check.bridgeProblem}`);
  return lines;
}

export function checkCommand(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { network: { type: 'string' }, user: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  if (!values.network) return fail('check needs --network NAME');
  if (values.user !== undefined && process.getuid?.() !== 0) {
    return fail(`only root may check another user's access; run "tapgate check --network ${values.network}" without --user to check your own`);
  }
  const request: Record<string, unknown> = { op: 'check', network: values.network };
  if (values.user !== undefined) request.user = values.user;
  const { reply } = call(request);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
  } else if (!reply.ok) {
    return fail(reply.error.message);
  } else {
    process.stdout.write(`${formatCheck(reply as unknown as CheckReply).join('\n')}\n`);
  }
  // Exit status 0 means a request made now would be granted: policy, quota and bridge all pass.
  return reply.ok && (reply as unknown as CheckReply).wouldGrant ? 0 : 1;
}


// `tapgate status` and `tapgate check`: what the daemon reports to the calling user.

import { parseArgs } from 'node:util';
import { call } from '../client/client.js';

function fail(message: string): number {
  process.stderr.write(`tapgate: ${message}\n`);
  return 1;
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
    pid: number; policy: { path: string; valid: boolean; error?: string }; tun: { ok: boolean; problem?: string };
    networks: { name: string; bridge: string }[]; leases: { tap: string; network: string; mac: string; uid: number; since: string }[];
  };
  const lines = [
    `daemon:   running (pid ${status.pid})`,
    `policy:   ${status.policy.path} ${status.policy.valid ? 'valid' : `INVALID: ${status.policy.error}`}`,
    `tun:      ${status.tun.ok ? 'ok' : status.tun.problem}`,
    `networks: ${status.networks.map((network) => `${network.name} (bridge ${network.bridge})`).join(', ') || 'none'}`,
    `taps:     ${status.leases.length === 0 ? 'none' : ''}`,
    ...status.leases.map((lease) => `  ${lease.tap}  network ${lease.network}  guest MAC ${lease.mac}  uid ${lease.uid}  since ${lease.since}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return status.policy.valid && status.tun.ok ? 0 : 1;
}

export function checkCommand(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { network: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  if (!values.network) return fail('check needs --network NAME');
  const { reply } = call({ op: 'check', network: values.network });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
  } else if (!reply.ok) {
    return fail(reply.error.message);
  } else {
    const check = reply as unknown as { allowed: boolean; reason: string };
    process.stdout.write(`${check.allowed ? 'allowed' : 'denied'}: ${check.reason}\n`);
  }
  return reply.ok && (reply as unknown as { allowed: boolean }).allowed ? 0 : 1;
}


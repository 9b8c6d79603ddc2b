// The `tapgate` command: daemon, run, status and check.

import { parseArgs } from 'node:util';
import { runDaemon } from '../daemon/main.js';
import { DEFAULT_CONFIG, DEFAULT_SOCKET } from '../protocol/paths.js';
import { call, DaemonUnreachableError } from '../client/client.js';
import { runLauncher } from './run.js';
import type { Level } from '../daemon/log.js';

const USAGE = `Usage: tapgate COMMAND [OPTIONS]

Commands:
  run [OPTIONS] -- QEMU ARGS...   start QEMU with taps from the daemon ("tapgate run --help")
  status [--json]                 show the daemon's health and this user's taps
  check --network NAME [--json]   show whether this user may use a network, and which rule decides
  daemon [--config FILE] [--socket PATH] [--log-level LEVEL]
                                  run the privileged daemon (as root or with CAP_NET_ADMIN)

The daemon's defaults are --config ${DEFAULT_CONFIG} and --socket ${DEFAULT_SOCKET}.
Clients use $TAPGATE_SOCKET when it is set.
`;

function fail(message: string): number {
  process.stderr.write(`tapgate: ${message}\n`);
  return 1;
}

async function daemonCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, socket: { type: 'string' }, 'log-level': { type: 'string' } },
    strict: true,
  });
  const level = (values['log-level'] ?? 'info') as Level;
  if (!['error', 'warn', 'info', 'debug'].includes(level)) return fail(`invalid --log-level ${JSON.stringify(level)}; expected error, warn, info or debug`);
  await runDaemon({ config: values.config ?? DEFAULT_CONFIG, socket: values.socket ?? DEFAULT_SOCKET, logLevel: level });
  return 0;
}

function statusCommand(argv: string[]): number {
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

function checkCommand(argv: string[]): number {
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

/** Runs the tapgate command line and resolves with the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'run': return await runLauncher(rest);
      case 'daemon': return await daemonCommand(rest);
      case 'status': return statusCommand(rest);
      case 'check': return checkCommand(rest);
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 1 : 0;
      default:
        return fail(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    }
  } catch (error) {
    if (error instanceof DaemonUnreachableError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      return fail((error as Error).message);
    }
    throw error;
  }
}

// The `tapgate` command: daemon, run, status and check.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { DaemonStartError, runDaemon } from '../daemon/main.js';
import { DEFAULT_CONFIG, DEFAULT_SOCKET } from '../protocol/paths.js';
import { DaemonUnreachableError } from '../client/client.js';
import { runLauncher } from './run.js';
import { checkCommand, statusCommand } from './status.js';
import { policyCommand } from './policy.js';
import { doctorCommand } from './doctor.js';
import { auditCommand } from './audit.js';
import type { Level } from '../daemon/log.js';

const USAGE = `Usage: tapgate COMMAND [OPTIONS]

Commands:
  run [OPTIONS] -- QEMU ARGS...   start QEMU with taps from the daemon ("tapgate run --help")
  status [--json]                 show the daemon's health and this user's taps
  check [--user USER] --network NAME [--json]
                                  explain whether a request would be granted: the decision, the rule
                                  (FILE:LINE), limits and usage; --user is for root; exit status 0
                                  when a request now would be granted
  audit [--since TIME] [--user USER] [--json] [--file PATH]
                                  print the audit log's decisions and lease ends ("tapgate audit --help")
  policy SUBCOMMAND [ARGS]        work on policy files ("tapgate policy --help")
  doctor [--network NAME] [--json]
                                  find what keeps this user's VMs off the network and print the fixes;
                                  exit status 0 all well, 1 something blocks VMs, 2 warnings only
  daemon [--config FILE] [--socket PATH] [--log-level LEVEL] [--keep-capabilities]
                                  run the privileged daemon (as root or with CAP_NET_ADMIN)
  --version                       print the version

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
    options: { config: { type: 'string' }, socket: { type: 'string' }, 'log-level': { type: 'string' }, 'keep-capabilities': { type: 'boolean' } },
    strict: true,
  });
  const level = (values['log-level'] ?? 'info') as Level;
  if (!['error', 'warn', 'info', 'debug'].includes(level)) return fail(`invalid --log-level ${JSON.stringify(level)}; expected error, warn, info or debug`);
  try {
    await runDaemon({
      config: values.config ?? DEFAULT_CONFIG, socket: values.socket ?? DEFAULT_SOCKET, logLevel: level, keepCapabilities: values['keep-capabilities'] ?? false,
    });
  } catch (error) {
    if (error instanceof DaemonStartError) return fail(error.message);
    throw error;
  }
  // Exit without waiting for the event loop to drain. Node 20 still joins its thread pool on exit,
  // so the link watcher's pending read delays this by up to LINK_EVENT_READ_TIMEOUT_MS (500 ms).
  // No log line is lost, because Node writes stderr synchronously on Linux.
  process.exit(0);
}

const SUBCOMMAND_HELP: Record<string, string> = {
  status: 'Usage: tapgate status [--json]\n\nShows the daemon\'s health, its policy file, /dev/net/tun, the networks and this user\'s taps.\n',
  check: 'Usage: tapgate check [--user USER] --network NAME [--json]\n\nExplains whether a request on NAME would be granted now, and which rule decides.\n--user is for root. Exit status 0 when it would be granted.\n',
  daemon: 'Usage: tapgate daemon [--config FILE] [--socket PATH] [--log-level error|warn|info|debug] [--keep-capabilities]\n\n' +
    'Runs the privileged daemon (as root or with CAP_NET_ADMIN, CAP_SETUID and CAP_SETGID).\n' +
    `Defaults: --config ${DEFAULT_CONFIG} --socket ${DEFAULT_SOCKET} --log-level info. SIGHUP reloads the policy.\n\n` +
    'Started as root with more capabilities than those three, CAP_SETPCAP among them, the daemon removes\n' +
    'the others from its bounding set and re-executes itself (same pid, arguments and environment), so it\n' +
    'holds only those three.\n' +
    '  --keep-capabilities   keep every capability the daemon was started with; do not re-execute\n',
};

function packageVersion(): string {
  const manifest = new URL('../../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

/** Subcommands by name; each resolves with its exit status. */
const COMMANDS: Record<string, (argv: string[]) => number | Promise<number>> = {
  run: runLauncher,
  daemon: daemonCommand,
  status: statusCommand,
  check: checkCommand,
  policy: policyCommand,
  doctor: doctorCommand,
  audit: auditCommand,
};

/** Runs the tapgate command line and resolves with the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command === undefined ? 1 : 0;
  }
  if (command === '--version' || command === 'version') {
    process.stdout.write(`tapgate ${packageVersion()}\n`);
    return 0;
  }
  if (SUBCOMMAND_HELP[command] && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(SUBCOMMAND_HELP[command]);
    return 0;
  }
  const run = COMMANDS[command];
  if (!run) return fail(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  try {
    return await run(rest);
  } catch (error) {
    if (error instanceof DaemonUnreachableError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      return fail((error as Error).message);
    }
    throw error;
  }
}

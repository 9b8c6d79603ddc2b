// `tapgate run`: gets taps from the daemon and starts QEMU with their descriptors inherited.

import { spawn } from 'node:child_process';
import { openTap } from '../client/client.js';
import { closeAll } from '../sys/fd.js';
import { macProblem } from '../protocol/messages.js';
import { interfaceNameProblem } from '../protocol/names.js';
import { findBridgeNics, rewriteArguments, splitOptions, type NicRequest, type PlannedNic } from './qemu-args.js';

export const RUN_USAGE = `Usage: tapgate run [OPTIONS] -- QEMU [QEMU-ARGUMENTS...]

Starts QEMU with a tap from the tapgate daemon for each bridge NIC. Every
"-nic bridge,br=NAME[,model=M][,mac=MAC]" and "-netdev bridge,id=ID,br=NAME" in the
QEMU arguments is replaced by "-netdev tap,fd=N"; each --network adds one more NIC.

Options:
  --network NAME   add a NIC on this network (a network or bridge name); repeatable
  --model MODEL    QEMU device for NICs that do not name one (default: virtio-net-pci)
  --mac MAC        guest MAC address of the NIC added by a single --network
                   (default: chosen by the daemon)
  --queues N       queues per tap, for multi-queue virtio-net (default: 1)
  --dry-run        print the QEMU command line instead of running it; taps are released
  --help           print this help
`;

export interface RunOptions {
  networks: string[];
  model: string;
  mac: string | undefined;
  queues: number;
  dryRun: boolean;
  command: string[];
}

class RunUsageError extends Error {}

/** Parses `tapgate run` options up to `--`; everything after it is the QEMU command. */
export function parseRunArguments(argv: readonly string[]): RunOptions | 'help' {
  argv = [...argv];
  const options: RunOptions = { networks: [], model: 'virtio-net-pci', mac: undefined, queues: 1, dryRun: false, command: [] };
  let index = 0;
  const value = (name: string): string => {
    const next = argv[++index];
    if (next === undefined || next === '--') throw new RunUsageError(`${name} needs a value`);
    return next;
  };
  for (; index < argv.length; index++) {
    let argument = argv[index];
    // `--option=value` is the same as `--option value`.
    const equals = argument.startsWith('--') ? argument.indexOf('=') : -1;
    if (equals > 0) {
      argv = [...argv.slice(0, index), argument.slice(0, equals), argument.slice(equals + 1), ...argv.slice(index + 1)];
      argument = argv[index];
    }
    if (argument === '--') {
      options.command = argv.slice(index + 1);
      break;
    }
    if (argument === '--help') return 'help';
    if (argument === '--dry-run') options.dryRun = true;
    else if (argument === '--network') options.networks.push(value('--network'));
    else if (argument === '--model') options.model = value('--model');
    else if (argument === '--mac') options.mac = value('--mac').toLowerCase();
    else if (argument === '--queues') options.queues = Number(value('--queues'));
    else throw new RunUsageError(`unknown option ${JSON.stringify(argument)}`);
  }
  if (options.command.length === 0) throw new RunUsageError('missing the QEMU command after "--"');
  if (!Number.isInteger(options.queues) || options.queues < 1) throw new RunUsageError(`--queues must be a positive integer, got ${JSON.stringify(argv[argv.indexOf('--queues') + 1])}`);
  for (const network of options.networks) {
    const problem = interfaceNameProblem(network);
    if (problem) throw new RunUsageError(`invalid network name ${JSON.stringify(network)}: ${problem}`);
  }
  if (options.mac !== undefined && options.networks.length !== 1) {
    throw new RunUsageError(`--mac applies to the NIC of a single --network, but ${options.networks.length} were given; put mac= in each -nic instead`);
  }
  if (options.mac !== undefined) {
    const problem = macProblem(options.mac);
    if (problem) throw new RunUsageError(`invalid MAC address ${JSON.stringify(options.mac)}: ${problem}`);
  }
  return options;
}

/** Returns the mac= of the user's `-device` for netdev `id`, so the daemon records the MAC the guest uses. */
function deviceMac(command: readonly string[], id: string): string | undefined {
  for (let index = 0; index + 1 < command.length; index++) {
    if (command[index].replace(/^--/, '-') !== '-device') continue;
    const parts = splitOptions(command[index + 1]).slice(1);
    if (!parts.includes(`netdev=${id}`)) continue;
    return parts.find((part) => part.startsWith('mac='))?.slice('mac='.length).toLowerCase();
  }
  return undefined;
}

export function plannedNics(options: RunOptions): NicRequest[] {
  const nics = findBridgeNics(options.command.slice(1), { model: options.model, queues: options.queues })
    .map((nic) => ({ ...nic, argumentIndex: nic.argumentIndex + 1 }));
  for (const nic of nics) {
    const problem = interfaceNameProblem(nic.network);
    if (problem) throw new RunUsageError(`invalid bridge name ${JSON.stringify(nic.network)} in "${options.command[nic.argumentIndex]}": ${problem}`);
  }
  for (const nic of nics) {
    if (nic.form === 'netdev') nic.mac ??= deviceMac(options.command, nic.id);
    if (nic.mac !== undefined) {
      const problem = macProblem(nic.mac);
      if (problem) throw new RunUsageError(`invalid MAC address ${JSON.stringify(nic.mac)} for netdev ${nic.id}: ${problem}`);
    }
  }
  for (const network of options.networks) {
    nics.push({ argumentIndex: -1, form: 'added', network, id: `tapgate${nics.length}`, model: options.model, mac: options.mac, queues: options.queues, extra: [] });
  }
  if (nics.length === 0) throw new RunUsageError('no network to attach: add --network NAME, or a "-nic bridge,br=NAME" option to the QEMU command');
  return nics;
}

/** Runs the launcher and resolves with its exit status (QEMU's, or 1 on a launcher error). */
export async function runLauncher(argv: readonly string[]): Promise<number> {
  let options: RunOptions | 'help';
  let nics: NicRequest[];
  try {
    options = parseRunArguments(argv);
    if (options === 'help') {
      process.stdout.write(RUN_USAGE);
      return 0;
    }
    nics = plannedNics(options);
  } catch (error) {
    if (!(error instanceof RunUsageError || error instanceof RangeError)) throw error;
    process.stderr.write(`tapgate run: ${error.message}\nRun "tapgate run --help" for usage.\n`);
    return 1;
  }

  const held: number[] = [];
  const planned: PlannedNic[] = [];
  try {
    for (const nic of nics) {
      const { grant, fds } = openTap({ network: nic.network, queues: nic.queues, vnetHdr: true, mac: nic.mac });
      // The child sees the inherited descriptors from 3 upwards, in the order they are held.
      const childFds = fds.map((_, offset) => 3 + held.length + offset);
      held.push(...fds);
      planned.push({ nic, childFds, mac: grant.mac });
      process.stderr.write(`tapgate: tap ${grant.name} on network ${grant.network} (bridge ${grant.bridge}, MTU ${grant.mtu}), guest MAC ${grant.mac}\n`);
    }
  } catch (error) {
    closeAll(held);
    process.stderr.write(`tapgate run: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }

  const command = [options.command[0], ...rewriteArguments(options.command, planned).slice(1)];
  if (options.dryRun) {
    closeAll(held);
    process.stdout.write(`${command.map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`)).join(' ')}\n`);
    return 0;
  }
  return spawnQemu(command, held);
}

function spawnQemu(command: string[], held: number[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command[0], command.slice(1), { stdio: ['inherit', 'inherit', 'inherit', ...held] });
    // Only QEMU keeps the taps open from here on, so they disappear when it exits.
    closeAll(held);
    const forward = (signal: NodeJS.Signals): void => { child.kill(signal); };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward);
    child.on('error', (error) => {
      process.stderr.write(`tapgate run: starting ${command[0]} failed: ${error.message}\n`);
      resolve(127);
    });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1)));
  });
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return numbers[signal];
}

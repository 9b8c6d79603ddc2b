// tapgate-helper: a drop-in for qemu-bridge-helper that needs no privileges.
//
// QEMU runs it as `HELPER [--use-vnet] --br=BRIDGE --fd=N` (libvirt puts --fd first) and waits
// for one descriptor on socket N. Instead of creating the tap itself, it requests a tap from the
// tapgate daemon and forwards the descriptor it gets. It reads no configuration file, so where the
// binary lives or how it was invoked never changes what is allowed.

import { fstatSync } from 'node:fs';
import { openTap, DaemonError, DaemonUnreachableError } from '../client/client.js';
import { errnoDescription } from '../sys/errors.js';
import { sendWithFds } from '../sys/unix.js';
import { closeAll } from '../sys/fd.js';
import { interfaceNameProblem } from '../protocol/names.js';

const USAGE = `Usage: tapgate-helper [--use-vnet] --br=BRIDGE --fd=UNIXFD

Asks the tapgate daemon for a tap attached to BRIDGE (a bridge or a tapgate network name)
and sends its descriptor over the Unix socket UNIXFD, as QEMU's bridge helper does.

  --use-vnet     enable the virtio-net header (IFF_VNET_HDR) when the kernel offers it
  --br=BRIDGE    bridge or network to attach the tap to
  --fd=UNIXFD    connected Unix socket to send the tap's descriptor on
  --help         print this help

The daemon is reached at $TAPGATE_SOCKET, or /run/tapgate/tapgate.sock by default.
`;

interface HelperArguments {
  useVnet: boolean;
  bridge: string;
  fd: number;
}

class UsageError extends Error {}

/** Parses QEMU's bridge-helper command line; any other option is a usage error. */
export function parseHelperArguments(argv: readonly string[]): HelperArguments | 'help' {
  let useVnet = false;
  let bridge: string | undefined;
  let fd: number | undefined;
  for (const argument of argv) {
    if (argument === '--help') return 'help';
    if (argument === '--use-vnet') {
      useVnet = true;
    } else if (argument.startsWith('--br=')) {
      bridge = argument.slice('--br='.length);
    } else if (argument.startsWith('--fd=')) {
      const text = argument.slice('--fd='.length);
      if (!/^\d{1,9}$/.test(text)) throw new UsageError(`invalid --fd value ${JSON.stringify(text)}: expected a descriptor number`);
      fd = Number(text);
    } else {
      throw new UsageError(`unknown argument ${JSON.stringify(argument)}`);
    }
  }
  if (bridge === undefined) throw new UsageError('missing --br=BRIDGE');
  if (fd === undefined) throw new UsageError('missing --fd=UNIXFD');
  return { useVnet, bridge, fd };
}

/**
 * Returns why `fd` cannot be the socket to QEMU, or undefined when it can. Checked before the
 * request, so that a wrong descriptor does not make the daemon create a tap that is dropped.
 */
function channelDescriptorProblem(fd: number): string | undefined {
  try {
    return fstatSync(fd).isSocket() ? undefined : 'is not a socket';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    return `is not an open descriptor: ${errnoDescription(code)} (${code})`;
  }
}

/** Runs the helper and returns its exit status. */
export function runHelper(argv: readonly string[]): number {
  let parsed: HelperArguments | 'help';
  try {
    parsed = parseHelperArguments(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tapgate-helper: ${error.message}\n\n${USAGE}`);
    return 1;
  }
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }

  // Checked here as well as in the daemon, so a bad name never leaves this process.
  const problem = interfaceNameProblem(parsed.bridge);
  if (problem) {
    process.stderr.write(`tapgate-helper: invalid bridge name ${JSON.stringify(parsed.bridge)}: ${problem}\n`);
    return 1;
  }

  const channelProblem = channelDescriptorProblem(parsed.fd);
  if (channelProblem) {
    process.stderr.write(`tapgate-helper: --fd=${parsed.fd} ${channelProblem}; QEMU passes a connected Unix socket as --fd\n`);
    return 1;
  }

  let fds: number[] = [];
  try {
    fds = openTap({ network: parsed.bridge, vnetHdr: parsed.useVnet, macChosenByVmm: true }).fds;
    // QEMU's receiving side reads a one-byte message carrying the descriptor.
    sendWithFds(parsed.fd, Buffer.from([0]), fds);
    return 0;
  } catch (error) {
    if (error instanceof DaemonError || error instanceof DaemonUnreachableError) {
      process.stderr.write(`tapgate-helper: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`tapgate-helper: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  } finally {
    closeAll(fds);
  }
}

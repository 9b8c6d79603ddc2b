// The daemon's capabilities: which it needs, and dropping the rest by re-executing itself.
//
// Capability sets are per thread, and Node has started V8 and libuv threads before any of this
// code runs, so capset() here would only change the main thread. Dropping capabilities from the
// main thread's bounding set and then calling execve() replaces the whole process: as uid 0 the
// new image gets exactly the bounding set, in every thread it starts.

import { DaemonStartError } from './start-error.js';
import type { Logger } from './log.js';
import {
  CAP_NET_ADMIN, CAP_SETGID, CAP_SETUID, capabilityMask, capabilityName, capabilityNames, hasCapability,
  readCapabilities, reexecBlocker, reexecWithBoundingSet, type Command,
} from '../sys/capabilities.js';

/** The capabilities the daemon uses, and what fails without each. */
const NEEDED_CAPABILITIES: ReadonlyMap<number, string> = new Map([
  [CAP_NET_ADMIN, 'taps cannot be created, configured or attached to bridges, so every open-tap request fails, and tapgate doctor cannot list the firewall'],
  [CAP_SETUID, 'bridge.conf files cannot be read with the requester\'s credentials, so with [bridge_conf] in the policy every request fails'],
  [CAP_SETGID, 'bridge.conf files cannot be read with the requester\'s groups, so with [bridge_conf] in the policy every request fails'],
]);
const NEEDED_MASK = capabilityMask(...NEEDED_CAPABILITIES.keys());

/**
 * Environment variable that marks the re-executed daemon, for its log line and as a guard: the
 * daemon never re-executes twice, although after one re-execution it finds nothing to drop.
 */
const REEXEC_MARKER = 'TAPGATE_CAPABILITY_REEXEC';

/**
 * Returns the command line that started this Node process, with the marker added to its
 * environment. Only stdin, stdout and stderr are passed on: Node marks the descriptors it
 * inherits close-on-exec at start-up (0 to 15 at least), and the daemon uses no others.
 */
function reexecCommand(): Command {
  return {
    path: process.execPath,
    argv: [process.argv0, ...process.execArgv, ...process.argv.slice(1)],
    env: { ...process.env, [REEXEC_MARKER]: '1' },
    inherit: [0, 1, 2],
  };
}

/** Re-executes with NEEDED_MASK as the bounding set; returns only when that is not possible. */
function shedCapabilities(logger: Logger, reexecuted: boolean): void {
  const sets = readCapabilities();
  const extra = (sets.bounding | sets.permitted | sets.inheritable | sets.ambient) & ~NEEDED_MASK;
  if (extra === 0n) return;
  const blocker = reexecuted ? 'it still held them after re-executing once' : reexecBlocker(sets);
  if (blocker === undefined) {
    logger.log('debug', 'Re-executing to drop capabilities', { dropping: capabilityNames(extra) });
    try {
      reexecWithBoundingSet(NEEDED_MASK, sets, reexecCommand());
    } catch (error) {
      throw new DaemonStartError(`Dropping capabilities by re-executing the daemon failed: ${String(error)}; start it with --keep-capabilities, or limit its capabilities with CapabilityBoundingSet= in its systemd unit`);
    }
  }
  // A bounding set with more is harmless for a process that is not root and cannot regain them.
  const unneeded = sets.permitted & ~NEEDED_MASK;
  if (unneeded !== 0n) {
    logger.log('warn', 'The daemon cannot drop capabilities it does not need', {
      capabilities: capabilityNames(unneeded), reason: blocker, fix: 'start it as root with CAP_SETPCAP, or limit its capabilities with CapabilityBoundingSet= in its systemd unit',
    });
  }
}

/**
 * Drops every capability outside NEEDED_MASK, unless `keepAll`, by re-executing the daemon when
 * it runs as root. Logs the capabilities kept and warns about each needed one that is missing.
 * Runs before the daemon opens any descriptor, so the new process inherits none of its own.
 */
export function restrictCapabilities(logger: Logger, keepAll: boolean): void {
  const reexecuted = process.env[REEXEC_MARKER] === '1';
  // Deleted, so that no program the daemon starts inherits the marker.
  delete process.env[REEXEC_MARKER];
  if (!keepAll) shedCapabilities(logger, reexecuted);

  const effective = readCapabilities().effective;
  logger.log('info', 'Kept capabilities', { capabilities: capabilityNames(effective), reexecuted, ...(keepAll ? { reason: '--keep-capabilities' } : {}) });
  for (const [capability, effect] of NEEDED_CAPABILITIES) {
    if (!hasCapability(effective, capability)) logger.log('warn', `The daemon lacks ${capabilityName(capability)}: ${effect}`, { fix: `start it as root, or grant it ${capabilityName(capability)}` });
  }
}

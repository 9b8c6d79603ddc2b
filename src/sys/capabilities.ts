// Capability sets of the calling thread, and the re-execution that takes capabilities away from
// a whole process.
//
// Capability sets and the bounding set belong to each thread (capabilities(7)), and Node has
// started its V8 and libuv threads before any of this code runs. prctl(PR_CAPBSET_DROP) and
// capset() here therefore change the calling thread only, which must be the main thread. An
// execve() from that thread ends every other thread and builds the new process's credentials
// from the calling thread's. For a caller with uid and euid 0 and without SECBIT_NOROOT, the new
// permitted and effective sets are (inheritable | bounding), because root's executables count
// as having every file capability ("Capabilities and execution of programs by root" in
// capabilities(7)). With the inheritable and ambient sets cleared, that is the bounding set.

import { readFileSync } from 'node:fs';
import { libc, lastErrno } from './libc.js';
import { fail } from './fd.js';
import { errnoDescription, errnoName, SystemError } from './errors.js';

// Capability numbers from linux/capability.h.
export const CAP_SETGID = 6;
export const CAP_SETUID = 7;
export const CAP_SETPCAP = 8;
export const CAP_NET_ADMIN = 12;

/** Names of capabilities 0 to 40 (Linux 5.9), in number order. */
const CAPABILITY_NAMES = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID',
  'SETPCAP', 'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW',
  'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT',
  'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD',
  'LEASE', 'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG',
  'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
];

// prctl(2) options and securebits from linux/prctl.h and linux/securebits.h.
const PR_CAPBSET_DROP = 24;
const PR_GET_SECUREBITS = 27;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;
// fcntl(2) commands and flag from asm-generic/fcntl.h.
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const SECBIT_NOROOT = 1 << 0;
/** capget() and capset() with two 32-bit words per set (linux/capability.h). */
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

const STATUS_PATH = '/proc/thread-self/status';
const LAST_CAP_PATH = '/proc/sys/kernel/cap_last_cap';

/** The five capability sets of one thread, each a bit mask indexed by capability number. */
export interface CapabilitySets {
  inheritable: bigint;
  permitted: bigint;
  effective: bigint;
  bounding: bigint;
  /** 0 on kernels before 4.3, which have no ambient set. */
  ambient: bigint;
}

/** The program that execve() runs: the file, its argument vector (argv[0] included) and its environment. */
export interface Command {
  path: string;
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  /**
   * Descriptors the program gets even when close-on-exec is set on them. Node sets it on
   * descriptors 0, 1 and 2 at start-up (libuv's uv_disable_stdio_inheritance), so without
   * this a re-executed Node process would lose its stdin, stdout and stderr.
   */
  inherit: readonly number[];
}

/** Returns the mask with the bits of `capabilities` set. */
export function capabilityMask(...capabilities: number[]): bigint {
  return capabilities.reduce((mask, capability) => mask | (1n << BigInt(capability)), 0n);
}

/** Returns the name of a capability number, such as `CAP_NET_ADMIN`. */
export function capabilityName(capability: number): string {
  return `CAP_${CAPABILITY_NAMES[capability] ?? capability}`;
}

/** Returns the names of the capabilities in `mask`, in number order. */
export function capabilityNames(mask: bigint): string[] {
  const names: string[] = [];
  for (let capability = 0; mask >> BigInt(capability) !== 0n; capability += 1) {
    if (hasCapability(mask, capability)) names.push(capabilityName(capability));
  }
  return names;
}

/** Returns whether `capability` is in `mask`. */
export function hasCapability(mask: bigint, capability: number): boolean {
  return ((mask >> BigInt(capability)) & 1n) === 1n;
}

function readProcFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).errno;
    if (typeof errno !== 'number') throw error;
    const code = Math.abs(errno);
    throw new SystemError('read', path, code, `${errnoDescription(errnoName(code))}; mount /proc`);
  }
}

/**
 * Parses the Cap* lines of a /proc/PID/status file. A missing CapAmb line (kernels before 4.3)
 * counts as an empty ambient set.
 * @throws Error naming `source` when another Cap* line is missing or is not hexadecimal.
 */
export function parseCapabilityStatus(text: string, source: string): CapabilitySets {
  const field = (name: string, fallback?: bigint): bigint => {
    const value = new RegExp(`^${name}:\\s*([0-9a-fA-F]+)$`, 'm').exec(text)?.[1];
    if (value !== undefined) return BigInt(`0x${value}`);
    if (fallback !== undefined) return fallback;
    throw new Error(`${source} has no valid ${name} line`);
  };
  return {
    inheritable: field('CapInh'),
    permitted: field('CapPrm'),
    effective: field('CapEff'),
    bounding: field('CapBnd'),
    ambient: field('CapAmb', 0n),
  };
}

/**
 * Reads the capability sets of the calling thread from /proc/thread-self/status.
 * @throws SystemError when the file cannot be read.
 */
export function readCapabilities(): CapabilitySets {
  return parseCapabilityStatus(readProcFile(STATUS_PATH), STATUS_PATH);
}

/** Returns the highest capability number of the running kernel (cap_last_cap). */
export function lastCapability(): number {
  const text = readProcFile(LAST_CAP_PATH).trim();
  if (!/^\d+$/.test(text)) throw new Error(`${LAST_CAP_PATH} contains ${JSON.stringify(text)}, not a capability number`);
  return Number(text);
}

function readSecurebits(): number {
  // Safety: PR_GET_SECUREBITS takes no further arguments and returns the bits.
  const bits = libc.prctl(PR_GET_SECUREBITS, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0);
  if (bits < 0) fail('prctl(PR_GET_SECUREBITS)', 'the calling thread');
  return bits;
}

/**
 * Returns why re-executing would not leave this process with its bounding set as its permitted
 * and effective sets, or undefined when it would. `sets` are the calling thread's.
 */
export function reexecBlocker(sets: CapabilitySets): string | undefined {
  if (!hasCapability(sets.effective, CAP_SETPCAP)) return 'it lacks CAP_SETPCAP, which dropping capabilities from the bounding set needs';
  // After execve(), a process that is not root keeps only its ambient capabilities (for a
  // program without file capabilities), and one whose real uid is not 0 runs in secure-execution
  // mode (AT_SECURE).
  const uid = process.getuid?.();
  const euid = process.geteuid?.();
  if (uid !== 0 || euid !== 0) return `it runs as uid ${uid} and euid ${euid}, not as root, so execve() would not give it back the capabilities it needs`;
  if ((readSecurebits() & SECBIT_NOROOT) !== 0) return 'SECBIT_NOROOT is set, so execve() would not give root the capabilities it needs';
  return undefined;
}

/** Removes every capability outside `keep` from the calling thread's bounding set; returns the mask removed. */
export function dropBoundingSet(keep: bigint, bounding: bigint): bigint {
  const last = lastCapability();
  let dropped = 0n;
  for (let capability = 0; capability <= last; capability += 1) {
    if (hasCapability(keep, capability) || !hasCapability(bounding, capability)) continue;
    // Safety: PR_CAPBSET_DROP takes the capability number; the rest must be 0.
    if (libc.prctl(PR_CAPBSET_DROP, 'unsigned long', capability, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0) < 0) {
      fail('prctl(PR_CAPBSET_DROP)', capabilityName(capability));
    }
    dropped |= capabilityMask(capability);
  }
  return dropped;
}

/** Empties the calling thread's inheritable set and keeps its permitted and effective sets. */
export function clearInheritable(): void {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  header.writeInt32LE(0, 4); // pid 0: the calling thread
  // Two struct __user_cap_data_struct {effective, permitted, inheritable}, for bits 0-31 and 32-63.
  const data = Buffer.alloc(24);
  // Safety: version 3 makes the kernel read and write exactly two 12-byte data structures.
  if (libc.capget(header, data) < 0) fail('capget', 'the calling thread');
  data.writeUInt32LE(0, 8);
  data.writeUInt32LE(0, 20);
  if (libc.capset(header, data) < 0) fail('capset', 'the inheritable set of the calling thread');
}

/** Empties the calling thread's ambient set. */
export function clearAmbient(): void {
  // Safety: PR_CAP_AMBIENT_CLEAR_ALL takes no capability; the rest must be 0.
  if (libc.prctl(PR_CAP_AMBIENT, 'unsigned long', PR_CAP_AMBIENT_CLEAR_ALL, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0) < 0) {
    fail('prctl(PR_CAP_AMBIENT_CLEAR_ALL)', 'the calling thread');
  }
}

/**
 * Replaces the process with `command`, keeping its pid, the descriptors in `command.inherit`
 * and those without close-on-exec. Must be called on the main thread, whose credentials the new
 * process gets.
 * @throws SystemError when execve() fails; the process is unchanged apart from what the caller did before.
 */
export function execute(command: Command): never {
  for (const fd of command.inherit) {
    // Safety: F_GETFD and F_SETFD take and return plain ints.
    const flags = libc.fcntl(fd, F_GETFD, 'int', 0);
    if (flags < 0) fail('fcntl(F_GETFD)', `fd ${fd}`);
    if (libc.fcntl(fd, F_SETFD, 'int', flags & ~FD_CLOEXEC) < 0) fail('fcntl(F_SETFD)', `fd ${fd}`);
  }
  const env = Object.entries(command.env).filter(([, value]) => value !== undefined).map(([key, value]) => `${key}=${value}`);
  // Safety: koffi passes each array as a char * array; the trailing null is the terminator execve() needs.
  libc.execve(command.path, [...command.argv, null], [...env, null]);
  throw new SystemError('execve', command.path, lastErrno());
}

/**
 * Removes every capability outside `keep` from the bounding set, clears the inheritable and
 * ambient sets and runs `command` with execve(), so the new process has only `keep` (as far as
 * the bounding set had it). `sets` are the calling thread's current sets. Call it only when
 * reexecBlocker() returns undefined, and before this process opens descriptors without
 * close-on-exec that `command` should not inherit.
 * @throws SystemError when a step fails. After a failed execve() the main thread's bounding
 *   set is already reduced, while its permitted and effective sets are unchanged.
 */
export function reexecWithBoundingSet(keep: bigint, sets: CapabilitySets, command: Command): never {
  dropBoundingSet(keep, sets.bounding);
  clearInheritable();
  // Skipped when empty, because kernels before 4.3 reject PR_CAP_AMBIENT.
  if (sets.ambient !== 0n) clearAmbient();
  return execute(command);
}

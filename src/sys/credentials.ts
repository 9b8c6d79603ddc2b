// Opening files with another user's file-system credentials, for policy files whose permission
// bits decide whom they apply to (QEMU bridge.conf includes).
//
// Linux checks file access against the calling thread's fsuid, fsgid and supplementary groups,
// and all three belong to the thread, not the process. The daemon therefore changes them on its
// own thread around one synchronous open() and changes them back before returning. The raw
// system calls are used because glibc's setgroups() changes every thread of the process (glibc
// signals each thread, as it does for setuid()), while Node's other threads must keep root's
// identity. The integration test checks the other threads' groups during a change.
//
// Privileges: CAP_SETUID for setfsuid() and CAP_SETGID for setfsgid() and setgroups(), in the
// daemon's user namespace. Without CAP_SETUID or CAP_SETGID the kernel ignores setfsuid() or
// setfsgid() silently, so each change is read back and a mismatch is an error. Changing fsuid
// from 0 to another uid clears CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and the other file-system
// capabilities from the effective set, so the user's permission bits decide the open. Changing
// it back to 0 restores them from the permitted set (capabilities(7), "Effect of user ID changes
// on capabilities").

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { lastErrno, libc } from './libc.js';
import { fail } from './fd.js';
import { SystemError } from './errors.js';

export interface FileCredentials {
  uid: number;
  /** The primary group, used as fsgid. */
  gid: number;
  /** Supplementary groups, such as the peer's SO_PEERGROUPS list. */
  groups: readonly number[];
}

interface SyscallNumbers {
  getgroups: number;
  setgroups: number;
  setfsuid: number;
  setfsgid: number;
}

/**
 * System call numbers from the kernel's uapi headers: asm/unistd_64.h on x86_64 and
 * asm-generic/unistd.h, which aarch64 uses.
 */
const SYSCALL_NUMBERS: Partial<Record<NodeJS.Architecture, SyscallNumbers>> = {
  x64: { getgroups: 115, setgroups: 116, setfsuid: 122, setfsgid: 123 },
  arm64: { getgroups: 158, setgroups: 159, setfsuid: 151, setfsgid: 152 },
};

/** (uid_t)-1: setfsuid() and setfsgid() change nothing and return the current value. */
const QUERY_ID = 0xffffffff;
const EPERM = 1;
const EINVAL = 22;
const EFBIG = 27;
/** Policy files are a few lines long; the bound keeps a wrong path from filling memory. */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024;

function syscallNumbers(): SyscallNumbers {
  const numbers = SYSCALL_NUMBERS[process.arch];
  if (!numbers) {
    throw new Error(`Reading files with a requester's credentials is implemented for x86_64 and aarch64 Linux only, not ${process.arch}; remove [bridge_conf] from the policy on this machine`);
  }
  return numbers;
}

function getGroups(numbers: SyscallNumbers): number[] {
  // Safety: with a size of 0 the kernel writes nothing and returns the number of groups.
  const count = Number(libc.syscall(numbers.getgroups, 'int', 0, 'void *', null));
  if (count < 0) fail('getgroups', 'the daemon thread');
  const buffer = Buffer.alloc(Math.max(count, 1) * 4);
  // Safety: the kernel writes at most `count` gid_t values into the buffer sized for them.
  const written = Number(libc.syscall(numbers.getgroups, 'int', count, 'void *', buffer));
  if (written < 0) fail('getgroups', 'the daemon thread');
  return Array.from({ length: written }, (_, index) => buffer.readUInt32LE(index * 4));
}

function setGroups(numbers: SyscallNumbers, groups: readonly number[]): void {
  const buffer = Buffer.alloc(Math.max(groups.length, 1) * 4);
  groups.forEach((gid, index) => buffer.writeUInt32LE(gid, index * 4));
  // Safety: the kernel reads `groups.length` gid_t values from the buffer.
  if (Number(libc.syscall(numbers.setgroups, 'size_t', groups.length, 'void *', buffer)) < 0) {
    const errno = lastErrno();
    const detail = errno === EPERM ? 'operation not permitted; the daemon needs CAP_SETUID and CAP_SETGID' : undefined;
    throw new SystemError('setgroups', `${groups.length} supplementary groups`, errno, detail);
  }
}

/** Sets fsuid or fsgid and reads it back, because the kernel reports no failure. */
function setFileId(number: number, id: number, name: 'fsuid' | 'fsgid'): void {
  libc.syscall(number, 'uint32_t', id);
  const current = Number(libc.syscall(number, 'uint32_t', QUERY_ID));
  if (current !== id) {
    throw new SystemError(`set${name}`, `${name} ${id}`, EPERM, `the kernel kept ${name} ${current}; the daemon needs CAP_SETUID and CAP_SETGID`);
  }
}

function restore(numbers: SyscallNumbers, uid: number, gid: number, groups: readonly number[]): void {
  try {
    // fsuid first: returning it to 0 puts the file-system capabilities back before anything else.
    setFileId(numbers.setfsuid, uid, 'fsuid');
    setFileId(numbers.setfsgid, gid, 'fsgid');
    // Skipped when unchanged, because setgroups() fails without CAP_SETGID even then.
    const current = getGroups(numbers);
    if (current.length !== groups.length || current.some((member, index) => member !== groups[index])) setGroups(numbers, groups);
  } catch (error) {
    // Serving later requests with another user's file access would be worse than stopping.
    process.stderr.write(`tapgate: restoring the daemon's file credentials failed, aborting: ${String(error)}\n`);
    process.abort();
  }
}

/**
 * Runs `action` with this thread's fsuid, fsgid and supplementary groups set to `credentials`,
 * and restores the previous values afterwards, also when `action` throws. `action` must be
 * synchronous: anything it leaves for later runs with the daemon's own credentials.
 * Privileges: CAP_SETUID and CAP_SETGID.
 * @throws SystemError when a credential cannot be changed (missing capability), or Error on an
 *   architecture other than x86_64 and aarch64. The process aborts when restoring fails.
 */
export function withFileCredentials<T>(credentials: FileCredentials, action: () => T): T {
  const numbers = syscallNumbers();
  const savedGroups = getGroups(numbers);
  const savedGid = Number(libc.syscall(numbers.setfsgid, 'uint32_t', QUERY_ID));
  const savedUid = Number(libc.syscall(numbers.setfsuid, 'uint32_t', QUERY_ID));
  try {
    setGroups(numbers, credentials.groups);
    setFileId(numbers.setfsgid, credentials.gid, 'fsgid');
    setFileId(numbers.setfsuid, credentials.uid, 'fsuid');
    return action();
  } finally {
    restore(numbers, savedUid, savedGid, savedGroups);
  }
}

function openForReading(path: string): number {
  try {
    // O_NONBLOCK keeps a FIFO from blocking the daemon, and O_NOCTTY keeps a terminal the
    // caller points an include at from becoming the daemon's controlling terminal.
    return openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).errno;
    if (typeof errno === 'number') throw new SystemError('open', path, Math.abs(errno));
    throw error;
  }
}

/**
 * Reads a regular file of at most MAX_POLICY_FILE_BYTES, opening it with `credentials`, so the
 * file's permission bits apply as they would to that user.
 * Privileges: CAP_SETUID and CAP_SETGID (see withFileCredentials).
 * @throws SystemError whose `code` is the errno name: EACCES or ENOENT from open(), EINVAL for
 *   a path that is not a regular file, EFBIG for a file that is too large.
 */
export function readFileAs(credentials: FileCredentials, path: string): Buffer {
  const fd = withFileCredentials(credentials, () => openForReading(path));
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new SystemError('open', path, EINVAL, 'not a regular file');
    // The size from fstat is not a bound: files under /proc report 0 whatever they hold.
    const chunks: Buffer[] = [];
    let length = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) break;
      chunks.push(chunk.subarray(0, read));
      length += read;
      if (length > MAX_POLICY_FILE_BYTES) throw new SystemError('read', path, EFBIG, `larger than ${MAX_POLICY_FILE_BYTES} bytes`);
    }
    return Buffer.concat(chunks, length);
  } finally {
    closeSync(fd);
  }
}

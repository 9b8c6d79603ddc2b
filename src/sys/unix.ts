// Unix stream sockets at the descriptor level: peer credentials and SCM_RIGHTS.
//
// Node's net module cannot pass descriptors, so the daemon sends replies and the clients
// read them through sendmsg/recvmsg here, on the same fds that libuv or the client owns.

import { addressOf, lastErrno, libc } from './libc.js';
import { closeAll, closeFd, fail } from './fd.js';
import { SystemError } from './errors.js';
import {
  AF_UNIX, CMSGHDR_SIZE, IOVEC_SIZE, MSGHDR, MSG_CMSG_CLOEXEC, MSG_CTRUNC, MSG_NOSIGNAL,
  SCM_MAX_FD, SCM_RIGHTS, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET, SO_PEERCRED, SO_PEERGROUPS,
  SO_RCVTIMEO, SO_SNDTIMEO,
} from './constants.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

const SUN_PATH_MAX = 108;

function align8(length: number): number {
  return (length + 7) & ~7;
}

/** Returns the credentials the kernel recorded for the peer at connect time (SO_PEERCRED). */
export function peerCredentials(fd: number): PeerCredentials {
  const ucred = Buffer.alloc(12);
  const length = [ucred.length];
  // Safety: struct ucred is three 32-bit ints; the kernel writes at most `length` bytes.
  if (libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, length) < 0) fail('getsockopt(SO_PEERCRED)', `socket fd ${fd}`);
  return { pid: ucred.readInt32LE(0), uid: ucred.readUInt32LE(4), gid: ucred.readUInt32LE(8) };
}

/** Returns the peer's supplementary groups as recorded at connect time (SO_PEERGROUPS). */
export function peerGroups(fd: number): number[] {
  let capacity = 64;
  for (;;) {
    const groups = Buffer.alloc(capacity * 4);
    const length = [groups.length];
    // Safety: the kernel writes at most `length` bytes of gid_t values, or sets ERANGE and the size it needs.
    if (libc.getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, length) === 0) {
      const result: number[] = [];
      for (let offset = 0; offset < length[0]; offset += 4) result.push(groups.readUInt32LE(offset));
      return result;
    }
    const errno = lastErrno();
    if (errno !== 34 /* ERANGE */ || capacity >= 65536) throw new SystemError('getsockopt(SO_PEERGROUPS)', `socket fd ${fd}`, errno);
    capacity = Math.max(capacity * 2, Math.ceil(length[0] / 4));
  }
}

function encodeMsghdr(iov: Buffer, control: Buffer | null): Buffer {
  const msg = Buffer.alloc(MSGHDR.size);
  msg.writeBigUInt64LE(addressOf(iov), MSGHDR.iov);
  msg.writeBigUInt64LE(1n, MSGHDR.iovlen);
  if (control) {
    msg.writeBigUInt64LE(addressOf(control), MSGHDR.control);
    msg.writeBigUInt64LE(BigInt(control.length), MSGHDR.controllen);
  }
  return msg;
}

function encodeIovec(data: Buffer): Buffer {
  const iov = Buffer.alloc(IOVEC_SIZE);
  iov.writeBigUInt64LE(addressOf(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  return iov;
}

/**
 * Sends bytes with descriptors attached to the first of them, and returns how many bytes went.
 * The caller keeps ownership of `fds`; the kernel takes its own references.
 */
export function sendWithFds(fd: number, data: Buffer, fds: readonly number[], flags = 0): number {
  if (fds.length > SCM_MAX_FD) throw new RangeError(`Cannot send ${fds.length} descriptors; the maximum is ${SCM_MAX_FD}`);
  let control: Buffer | null = null;
  if (fds.length > 0) {
    control = Buffer.alloc(align8(CMSGHDR_SIZE + 4 * fds.length));
    control.writeBigUInt64LE(BigInt(CMSGHDR_SIZE + 4 * fds.length), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((passed, index) => control!.writeInt32LE(passed, CMSGHDR_SIZE + 4 * index));
  }
  const iov = encodeIovec(data);
  const msg = encodeMsghdr(iov, control);
  // Safety: msg points at iov and control, which point at data; all stay referenced until return.
  const sent = Number(libc.sendmsg(fd, msg, flags | MSG_NOSIGNAL));
  if (sent < 0) fail('sendmsg', `socket fd ${fd}`);
  return sent;
}

export interface Received {
  data: Buffer;
  fds: number[];
}

/**
 * Receives up to `maxBytes` and any descriptors that arrive with them (marked close-on-exec).
 * Returns empty data at end of stream. Descriptors beyond `maxFds` are closed by the kernel,
 * which is reported as an error after the ones that did arrive are closed here too.
 */
export function recvWithFds(fd: number, maxBytes: number, maxFds: number, flags = 0): Received {
  const data = Buffer.alloc(maxBytes);
  const control = Buffer.alloc(align8(CMSGHDR_SIZE + 4 * maxFds));
  const iov = encodeIovec(data);
  const msg = encodeMsghdr(iov, control);
  // Safety: as in sendWithFds; the kernel writes at most controllen bytes into control.
  const received = Number(libc.recvmsg(fd, msg, flags | MSG_CMSG_CLOEXEC));
  if (received < 0) fail('recvmsg', `socket fd ${fd}`);

  const fds: number[] = [];
  const controlLength = Number(msg.readBigUInt64LE(MSGHDR.controllen));
  for (let offset = 0; offset + CMSGHDR_SIZE <= controlLength;) {
    const length = Number(control.readBigUInt64LE(offset));
    if (length < CMSGHDR_SIZE) break;
    if (control.readInt32LE(offset + 8) === SOL_SOCKET && control.readInt32LE(offset + 12) === SCM_RIGHTS) {
      for (let at = offset + CMSGHDR_SIZE; at + 4 <= offset + length; at += 4) fds.push(control.readInt32LE(at));
    }
    offset += align8(length);
  }
  if (msg.readInt32LE(MSGHDR.flags) & MSG_CTRUNC) {
    closeAll(fds);
    throw new RangeError(`More than ${maxFds} descriptors arrived on socket fd ${fd}; the extra ones were discarded`);
  }
  return { data: data.subarray(0, received), fds };
}

/** Sends the whole buffer on a blocking socket. */
export function sendAll(fd: number, data: Buffer): void {
  let offset = 0;
  while (offset < data.length) {
    offset += sendWithFds(fd, data.subarray(offset), []);
  }
}

function setSocketTimeout(fd: number, option: number, milliseconds: number): void {
  const timeval = Buffer.alloc(16);
  timeval.writeBigInt64LE(BigInt(Math.floor(milliseconds / 1000)), 0);
  timeval.writeBigInt64LE(BigInt((milliseconds % 1000) * 1000), 8);
  // Safety: struct timeval is two 64-bit fields on LP64.
  if (libc.setsockopt(fd, SOL_SOCKET, option, timeval, timeval.length) < 0) {
    fail(option === SO_RCVTIMEO ? 'setsockopt(SO_RCVTIMEO)' : 'setsockopt(SO_SNDTIMEO)', `socket fd ${fd}`);
  }
}

/**
 * Connects a blocking Unix stream socket to `path`; reads and writes on it time out after
 * `timeoutMs` with EAGAIN, so a stuck daemon cannot hang the caller.
 */
export function connectUnix(path: string, timeoutMs: number): number {
  const pathBytes = Buffer.from(path, 'utf8');
  if (pathBytes.length >= SUN_PATH_MAX) throw new RangeError(`Socket path ${path} is longer than ${SUN_PATH_MAX - 1} bytes`);
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail('socket(AF_UNIX)', path);
  try {
    setSocketTimeout(fd, SO_RCVTIMEO, timeoutMs);
    setSocketTimeout(fd, SO_SNDTIMEO, timeoutMs);
    const address = Buffer.alloc(2 + SUN_PATH_MAX);
    address.writeUInt16LE(AF_UNIX, 0);
    pathBytes.copy(address, 2);
    // Safety: struct sockaddr_un is a 16-bit family and a 108-byte NUL-terminated path.
    if (libc.connect(fd, address, 2 + pathBytes.length + 1) < 0) fail('connect', path);
    return fd;
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

/**
 * Creates a connected pair of close-on-exec Unix stream sockets, the channel QEMU gives its
 * bridge helper. Reads and writes on both ends time out after `timeoutMs` with EAGAIN.
 * @returns both descriptors, owned by the caller.
 */
export function socketPair(timeoutMs: number): [number, number] {
  const pair = Buffer.alloc(8);
  // Safety: socketpair writes two ints into the 8-byte buffer.
  if (libc.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) fail('socketpair(AF_UNIX)', 'socket pair');
  const fds: [number, number] = [pair.readInt32LE(0), pair.readInt32LE(4)];
  try {
    for (const fd of fds) {
      setSocketTimeout(fd, SO_RCVTIMEO, timeoutMs);
      setSocketTimeout(fd, SO_SNDTIMEO, timeoutMs);
    }
    return fds;
  } catch (error) {
    closeAll(fds);
    throw error;
  }
}

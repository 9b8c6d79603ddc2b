// The client library: requests taps from the daemon and returns the descriptors it sends.
//
// Calls are synchronous and bounded by a timeout, which suits the short-lived helper and
// launcher processes that use them.

import { constants as osConstants } from 'node:os';
import { connectUnix, recvWithFds, sendAll } from '../sys/unix.js';
import { closeAll, closeFd } from '../sys/fd.js';
import { SystemError, errnoDescription } from '../sys/errors.js';
import { FrameDecoder, FrameTooLargeError, MAX_REPLY_BYTES, encodeFrame } from '../protocol/wire.js';
import { MAX_QUEUES, PROTOCOL_VERSION, type ErrorCode, type Reply, type TapGrant } from '../protocol/messages.js';
import { clientSocketPath } from '../protocol/paths.js';

export const DEFAULT_TIMEOUT_MS = 5000;

/** The daemon could not be reached, or sent no reply in time. */
export class DaemonUnreachableError extends Error {
  constructor(readonly socketPath: string, readonly code: string, detail: string) {
    super(`Cannot reach the tapgate daemon at ${socketPath}: ${detail}`);
    this.name = 'DaemonUnreachableError';
  }
}

/** An error reply from the daemon; `code` is its kind. */
export class DaemonError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = 'DaemonError';
  }
}

function unreachable(path: string, error: SystemError): DaemonUnreachableError {
  const detail = `${errnoDescription(error.code)} (${error.code})`;
  const advice: Record<string, string> = {
    ENOENT: 'the socket was not found; start the daemon ("systemctl start tapgate" or "tapgate daemon") or set TAPGATE_SOCKET to its socket',
    ECONNREFUSED: 'nothing listens there; start the daemon ("systemctl start tapgate" or "tapgate daemon")',
    EACCES: 'this user may not open the socket or a directory above it; ask an administrator to check its permissions',
    EAGAIN: 'the daemon sent no reply in time; see its log ("journalctl -u tapgate")',
  };
  return new DaemonUnreachableError(path, error.code, `${detail}; ${advice[error.code] ?? 'check that the daemon runs ("systemctl status tapgate")'}`);
}

function notTapgateReply(socketPath: string): DaemonUnreachableError {
  return new DaemonUnreachableError(socketPath, 'EPROTO', 'the reply is not a tapgate reply; is a tapgate daemon of a matching version listening there?');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Decodes a reply body: an object with a boolean "ok" and, when "ok" is false, an "error"
 * object with a string "message".
 * @throws DaemonUnreachableError when the body is anything else.
 */
function parseReply(socketPath: string, body: Buffer): Reply {
  let reply: unknown;
  try {
    reply = JSON.parse(body.toString('utf8'));
  } catch {
    throw notTapgateReply(socketPath);
  }
  if (!isObject(reply) || typeof reply.ok !== 'boolean') throw notTapgateReply(socketPath);
  if (!reply.ok && !(isObject(reply.error) && typeof reply.error.message === 'string')) throw notTapgateReply(socketPath);
  return reply as unknown as Reply;
}

/**
 * Sends one request and returns the reply with any descriptors it carried (owned by the caller).
 * @throws DaemonUnreachableError when the socket cannot be used or no reply arrives in time.
 */
export function call(message: Record<string, unknown>, socketPath = clientSocketPath(), timeoutMs = DEFAULT_TIMEOUT_MS): { reply: Reply; fds: number[] } {
  let fd: number;
  try {
    fd = connectUnix(socketPath, timeoutMs);
  } catch (error) {
    if (error instanceof SystemError) throw unreachable(socketPath, error);
    throw error;
  }
  const fds: number[] = [];
  // Each recvmsg() waits up to timeoutMs by itself, so without a deadline a daemon that sends
  // one byte at a time could hold the caller for ever.
  // NOTE: a reply can still take up to twice timeoutMs, because the deadline is checked only
  // between reads. src/sys/unix.ts offers no way to shorten the socket timeout as time passes.
  const deadline = Date.now() + timeoutMs;
  try {
    sendAll(fd, encodeFrame({ version: PROTOCOL_VERSION, ...message }));
    const decoder = new FrameDecoder(MAX_REPLY_BYTES);
    for (;;) {
      const received = recvWithFds(fd, 64 * 1024, MAX_QUEUES + 1);
      fds.push(...received.fds);
      if (received.data.length === 0) {
        throw new DaemonUnreachableError(socketPath, 'EOF', 'the daemon closed the connection without a complete reply; see its log');
      }
      const frames = decoder.push(received.data);
      if (frames.length > 0) return { reply: parseReply(socketPath, frames[0]), fds };
      if (Date.now() >= deadline) throw new SystemError('recvmsg', socketPath, osConstants.errno.EAGAIN);
    }
  } catch (error) {
    closeAll(fds);
    if (error instanceof SystemError) throw unreachable(socketPath, error);
    if (error instanceof FrameTooLargeError) {
      throw new DaemonUnreachableError(socketPath, 'EPROTO', `${error.message}; is a tapgate daemon listening there?`);
    }
    throw error;
  } finally {
    closeFd(fd);
  }
}

export interface OpenTapOptions {
  network: string;
  queues?: number;
  vnetHdr?: boolean;
  mac?: string;
  macChosenByVmm?: boolean;
  socketPath?: string;
  timeoutMs?: number;
}

/**
 * Asks the daemon for a tap on `network` (a network or bridge name).
 * @returns the grant and one descriptor per queue, owned by the caller.
 * @throws DaemonError when refused, DaemonUnreachableError when the daemon cannot be reached.
 */
export function openTap(options: OpenTapOptions): { grant: TapGrant; fds: number[] } {
  const message: Record<string, unknown> = { op: 'open-tap', network: options.network, queues: options.queues ?? 1, vnetHdr: options.vnetHdr ?? false };
  if (options.mac) message.mac = options.mac;
  if (options.macChosenByVmm) message.macChosenByVmm = true;
  const socketPath = options.socketPath ?? clientSocketPath();
  const { reply, fds } = call(message, socketPath, options.timeoutMs);
  if (!reply.ok) {
    closeAll(fds);
    throw new DaemonError(reply.error.code, reply.error.message);
  }
  const tap = (reply as { tap?: unknown }).tap as Partial<TapGrant> | null | undefined;
  if (reply.op !== 'open-tap' || typeof tap !== 'object' || tap === null || typeof tap.queues !== 'number') {
    closeAll(fds);
    throw notTapgateReply(socketPath);
  }
  if (tap.queues !== message.queues) {
    closeAll(fds);
    throw new DaemonError('internal', `The daemon's reply granted a tap with ${tap.queues} queues, but the request was for ${message.queues}`);
  }
  if (fds.length !== tap.queues) {
    closeAll(fds);
    throw new DaemonError('internal', `The daemon's reply carried ${fds.length} descriptors for a tap with ${tap.queues} queues`);
  }
  return { grant: tap as TapGrant, fds };
}

// The daemon's socket: framing, per-connection identity, dispatch and replies with fds.
//
// libuv reads requests; replies go out through sendmsg on the same fd because they may carry
// descriptors. A connection carries any number of requests, handled in order, one at a time.

import { close } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { sendWithFds } from '../sys/unix.js';
import { FrameDecoder, FrameTooLargeError, MAX_REQUEST_BYTES, encodeFrame } from '../protocol/wire.js';
import { PROTOCOL_VERSION, RequestError, type ErrorCode, type Reply } from '../protocol/messages.js';
import type { Identity } from '../policy/types.js';
import type { Logger } from './log.js';
import { connectionIdentity } from './identity.js';

/** A handler's result: the reply and any descriptors to attach, which the server closes after sending. */
export interface HandlerResult {
  reply: Reply;
  fds?: number[];
}

export type Handler = (identity: Identity, body: Buffer) => HandlerResult;

const IDLE_TIMEOUT_MS = 30_000;
/** A started frame must be complete this soon, so trickled bytes cannot hold a connection. */
const FRAME_DEADLINE_MS = 10_000;
const MAX_CONNECTIONS = 4096;
/** Connections one non-root user may hold open at once. */
const MAX_CONNECTIONS_PER_UID = 64;
/** Complete frames read ahead on one connection before reading pauses. */
const MAX_QUEUED_FRAMES = 16;

/** Per-user request budget from the policy's [daemon] table. */
export interface RateSettings {
  requestsPerSecond: number;
  requestBurst: number;
}
const RATE_SUMMARY_MS = 60_000;

function errorReply(code: ErrorCode, message: string): Reply {
  return { version: PROTOCOL_VERSION, ok: false, error: { code, message } };
}

/** Returns the kernel fd behind a connected Node socket; Node exposes it on the pipe handle. */
function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  if (typeof handle?.fd !== 'number' || handle.fd < 0) throw new Error('Connected socket has no file descriptor');
  return handle.fd;
}

/**
 * Closes the daemon's copies of descriptors it has sent, on the libuv thread pool. When the
 * requester has already closed its copy, the daemon's close is the last one, and the kernel
 * tears the tap down inside it. That took 18 to 26 ms on a 2-vCPU VM (bench/scale.ts), which
 * on the event loop would stall every other request.
 */
function releaseSent(fds: readonly number[], logger: Logger): void {
  for (const sentFd of fds) {
    close(sentFd, (error) => {
      if (error) logger.log('warn', 'Closing a sent descriptor failed', { fd: sentFd, error: String(error) });
    });
  }
}

function send(socket: Socket, fd: number, result: HandlerResult, logger: Logger): void {
  const frame = encodeFrame(result.reply);
  try {
    const sent = sendWithFds(fd, frame, result.fds ?? []);
    // A reply larger than the socket buffer goes out in pieces; the rest carries no fds.
    // Reading pauses until it has drained, so a later reply cannot overtake it.
    if (sent < frame.length) {
      socket.pause();
      socket.write(frame.subarray(sent), () => socket.resume());
    }
  } catch (error) {
    logger.log('warn', 'Sending a reply failed; closing the connection', { error: String(error) });
    socket.destroy();
  } finally {
    releaseSent(result.fds ?? [], logger);
  }
}

/** Per-uid request budget: a token bucket shared by all of one user's connections. */
class RateLimiter {
  private readonly buckets = new Map<number, { tokens: number; at: number; rejected: number }>();

  constructor(private readonly settings: () => RateSettings) {}

  get perSecond(): number {
    return this.settings().requestsPerSecond;
  }

  get burst(): number {
    return this.settings().requestBurst;
  }

  /** Takes one token for `uid`; returns false when its budget is spent. Root has no limit. */
  take(uid: number): boolean {
    if (uid === 0) return true;
    const now = Date.now();
    const bucket = this.buckets.get(uid) ?? { tokens: this.burst, at: now, rejected: 0 };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    this.buckets.set(uid, bucket);
    if (bucket.tokens < 1) {
      bucket.rejected++;
      return false;
    }
    bucket.tokens--;
    return true;
  }

  /** Returns and resets the rejection counts, for one summary log line per user. */
  drainRejected(): [number, number][] {
    const counts: [number, number][] = [];
    for (const [uid, bucket] of this.buckets) {
      if (bucket.rejected > 0) counts.push([uid, bucket.rejected]);
      if (bucket.tokens >= this.burst) this.buckets.delete(uid);
      else bucket.rejected = 0;
    }
    return counts;
  }
}

interface Limits {
  rate: RateLimiter;
  connections: Map<number, number>;
}

function handleFrame(identity: Identity, body: Buffer, handler: Handler, limits: Limits, logger: Logger): HandlerResult {
  if (!limits.rate.take(identity.uid)) {
    return { reply: errorReply('rate-limited', `Too many requests from uid ${identity.uid}: at most ${limits.rate.perSecond} per second (bursts of ${limits.rate.burst}); retry in a moment, or ask an administrator to raise [daemon] requests_per_second`) };
  }
  try {
    return handler(identity, body);
  } catch (error) {
    const known = error instanceof RequestError;
    if (!known) logger.log('error', 'Handling a request failed', { uid: identity.uid, pid: identity.pid, error: String((error as Error)?.stack ?? error) });
    return { reply: errorReply(known ? error.code : 'internal', known ? error.message : `Internal error: ${String(error)}`) };
  }
}

/**
 * Serves one connection. Requests are handled one per event-loop turn, so a client that
 * pipelines thousands of them shares the daemon with everyone else, and reading pauses while
 * too many wait. A frame must arrive whole within FRAME_DEADLINE_MS of its first byte.
 */
function serveConnection(socket: Socket, handler: Handler, limits: Limits, logger: Logger): void {
  let fd: number;
  let identity: Identity;
  try {
    fd = socketFd(socket);
    identity = connectionIdentity(fd);
  } catch (error) {
    logger.log('error', 'Reading the peer credentials of a new connection failed', { error: String(error) });
    socket.destroy();
    return;
  }
  const open = (limits.connections.get(identity.uid) ?? 0) + 1;
  limits.connections.set(identity.uid, open);
  socket.once('close', () => {
    const remaining = (limits.connections.get(identity.uid) ?? 1) - 1;
    if (remaining > 0) limits.connections.set(identity.uid, remaining);
    else limits.connections.delete(identity.uid);
  });
  if (identity.uid !== 0 && open > MAX_CONNECTIONS_PER_UID) {
    send(socket, fd, { reply: errorReply('rate-limited', `Too many open connections from uid ${identity.uid}: at most ${MAX_CONNECTIONS_PER_UID}; close idle ones`) }, logger);
    socket.destroy();
    return;
  }

  const decoder = new FrameDecoder(MAX_REQUEST_BYTES);
  const queue: Buffer[] = [];
  let scheduled = false;
  let endedByPeer = false;
  let frameTimer: NodeJS.Timeout | undefined;
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());

  const finishIfEnded = (): void => {
    if (!endedByPeer || queue.length > 0 || socket.destroyed) return;
    if (decoder.buffered > 0) {
      send(socket, fd, { reply: errorReply('bad-request', `Request truncated: the connection closed after ${decoder.buffered} bytes of an incomplete message`) }, logger);
    }
    socket.end();
  };
  const drain = (): void => {
    scheduled = false;
    const body = queue.shift();
    if (body === undefined || socket.destroyed) return;
    send(socket, fd, handleFrame(identity, body, handler, limits, logger), logger);
    if (queue.length > 0) schedule();
    else if (socket.isPaused() && !socket.destroyed) socket.resume();
    finishIfEnded();
  };
  const schedule = (): void => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(drain);
  };

  socket.on('data', (chunk: Buffer) => {
    let completed: Buffer[];
    try {
      completed = decoder.push(chunk);
    } catch (error) {
      if (!(error instanceof FrameTooLargeError)) throw error;
      send(socket, fd, { reply: errorReply('bad-request', `Request too large: ${error.message}`) }, logger);
      socket.destroy();
      return;
    }
    queue.push(...completed);
    // The deadline runs from the first byte of the frame still incomplete.
    if (completed.length > 0 || decoder.buffered === 0) {
      clearTimeout(frameTimer);
      frameTimer = undefined;
    }
    if (decoder.buffered > 0) frameTimer ??= setTimeout(() => socket.destroy(), FRAME_DEADLINE_MS);
    if (queue.length > MAX_QUEUED_FRAMES) socket.pause();
    if (queue.length > 0) schedule();
  });
  socket.on('end', () => {
    endedByPeer = true;
    finishIfEnded();
  });
  socket.on('close', () => clearTimeout(frameTimer));
  socket.on('error', (error) => logger.log('debug', 'Connection error', { uid: identity.uid, error: String(error) }));
}

/** Starts listening on `path` (which the caller has made free) and serves each connection. */
export function startServer(path: string, handler: Handler, logger: Logger, rate: () => RateSettings): Promise<Server> {
  const limits: Limits = { rate: new RateLimiter(rate), connections: new Map() };
  const server = createServer({ allowHalfOpen: true }, (socket) => serveConnection(socket, handler, limits, logger));
  server.maxConnections = MAX_CONNECTIONS;
  // Rejected requests are not audited one by one; a summary per user keeps a flood out of the logs.
  const summary = setInterval(() => {
    for (const [uid, count] of limits.rate.drainRejected()) logger.log('warn', 'Requests rejected by the rate limit', { uid, count, periodSeconds: RATE_SUMMARY_MS / 1000 });
  }, RATE_SUMMARY_MS);
  summary.unref();
  server.once('close', () => clearInterval(summary));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, backlog: 1024 }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

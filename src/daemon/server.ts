// The daemon's socket: framing, per-connection identity, dispatch and replies with fds.
//
// libuv reads requests; replies go out through sendmsg on the same fd because they may carry
// descriptors. A connection carries any number of requests, one at a time.

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
const MAX_CONNECTIONS = 4096;

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
 * requester has already closed its copy, the daemon holds the last reference and the kernel
 * tears the tap down inside this close, which took 18 to 26 ms on a 2-vCPU VM; on the event
 * loop that would stall every other request.
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

function serveConnection(socket: Socket, handler: Handler, logger: Logger): void {
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
  const decoder = new FrameDecoder(MAX_REQUEST_BYTES);
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());

  socket.on('data', (chunk: Buffer) => {
    let frames: Buffer[];
    try {
      frames = decoder.push(chunk);
    } catch (error) {
      if (!(error instanceof FrameTooLargeError)) throw error;
      send(socket, fd, { reply: errorReply('bad-request', `Request too large: ${error.message}`) }, logger);
      socket.destroy();
      return;
    }
    for (const body of frames) {
      let result: HandlerResult;
      try {
        result = handler(identity, body);
      } catch (error) {
        const known = error instanceof RequestError;
        if (!known) logger.log('error', 'Handling a request failed', { uid: identity.uid, pid: identity.pid, error: String((error as Error)?.stack ?? error) });
        result = { reply: errorReply(known ? error.code : 'internal', known ? error.message : `Internal error: ${String(error)}`) };
      }
      send(socket, fd, result, logger);
    }
  });
  socket.on('end', () => {
    if (decoder.buffered > 0) {
      send(socket, fd, { reply: errorReply('bad-request', `Request truncated: the connection closed after ${decoder.buffered} bytes of an incomplete message`) }, logger);
    }
    socket.end();
  });
  socket.on('error', (error) => logger.log('debug', 'Connection error', { uid: identity.uid, error: String(error) }));
}

/** Starts listening on `path` (which the caller has made free) and serves each connection. */
export function startServer(path: string, handler: Handler, logger: Logger): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => serveConnection(socket, handler, logger));
  server.maxConnections = MAX_CONNECTIONS;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, backlog: 1024 }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

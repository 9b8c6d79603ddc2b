#!/usr/bin/env node
// One user's share of the storm benchmark (see storm.ts). It prints "ready", waits for a byte
// on stdin, then opens all its connections and sends every open-tap request before reading
// any reply, so all of its requests are in flight at once. Once every reply is in it prints
// one JSON line with its timings, and it holds the taps until stdin closes. Closing a tap
// makes the kernel tear it down under the RTNL lock for milliseconds, which would slow the
// grants of clients still waiting; the orchestrator closes stdin after the last reply.
//
// Replies are read in the order the requests went out, so a latency includes any wait behind
// an earlier reply of the same process; the figures are upper bounds.

import { readSync } from 'node:fs';
import { connectUnix, recvWithFds, sendAll } from '../src/sys/unix.js';
import { closeAll, closeFd } from '../src/sys/fd.js';
import { FrameDecoder, MAX_REPLY_BYTES, encodeFrame } from '../src/protocol/wire.js';
import { MAX_QUEUES, PROTOCOL_VERSION, type Reply } from '../src/protocol/messages.js';

export interface StormClientOptions {
  socket: string;
  network: string;
  requests: number;
  timeoutMs: number;
}

export interface StormClientResult {
  latenciesMs: number[];
  /** Failed requests by error code (the daemon's, or a client-side errno or error name). */
  errors: Record<string, number>;
  /** Wall-clock times in ms since the epoch, with sub-millisecond precision. */
  firstRequestAt: number;
  lastReplyAt: number;
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

function errorCode(error: unknown): string {
  return (error as { code?: string }).code ?? (error instanceof Error ? error.name : 'unknown');
}

/** Reads one reply frame and the descriptors that came with it from a blocking socket. */
function readReply(fd: number): { reply: Reply; fds: number[] } {
  const decoder = new FrameDecoder(MAX_REPLY_BYTES);
  const fds: number[] = [];
  try {
    for (;;) {
      const received = recvWithFds(fd, 64 * 1024, MAX_QUEUES + 1);
      fds.push(...received.fds);
      if (received.data.length === 0) throw Object.assign(new Error('the daemon closed the connection without a reply'), { code: 'EOF' });
      const frames = decoder.push(received.data);
      if (frames.length > 0) return { reply: JSON.parse(frames[0].toString('utf8')) as Reply, fds };
    }
  } catch (error) {
    closeAll(fds);
    throw error;
  }
}

function runStorm(options: StormClientOptions): { result: StormClientResult; taps: number[] } {
  const errors: Record<string, number> = {};
  const countError = (code: string): void => { errors[code] = (errors[code] ?? 0) + 1; };
  const frame = encodeFrame({ version: PROTOCOL_VERSION, op: 'open-tap', network: options.network, queues: 1, vnetHdr: true });
  const pending: { fd: number; startedAt: number }[] = [];
  const firstRequestAt = now();
  for (let index = 0; index < options.requests; index++) {
    const startedAt = now();
    try {
      const fd = connectUnix(options.socket, options.timeoutMs);
      pending.push({ fd, startedAt });
      sendAll(fd, frame);
    } catch (error) {
      countError(errorCode(error));
    }
  }

  const latenciesMs: number[] = [];
  const taps: number[] = [];
  let lastReplyAt = firstRequestAt;
  for (const { fd, startedAt } of pending) {
    try {
      const { reply, fds } = readReply(fd);
      lastReplyAt = now();
      if (reply.ok && fds.length === 1) {
        latenciesMs.push(lastReplyAt - startedAt);
        taps.push(...fds);
      } else {
        closeAll(fds);
        countError(reply.ok ? 'wrong-descriptor-count' : reply.error.code);
      }
    } catch (error) {
      countError(errorCode(error));
    } finally {
      closeFd(fd);
    }
  }
  return { result: { latenciesMs, errors, firstRequestAt, lastReplyAt }, taps };
}

/** Blocks until stdin yields one byte or reaches end of file. */
function waitForStdin(): void {
  readSync(0, Buffer.alloc(1), 0, 1, null);
}

const options = JSON.parse(process.argv[2] ?? 'null') as StormClientOptions | null;
if (options === null) {
  process.stderr.write('Usage: storm-client.js OPTIONS_JSON (started by the storm benchmark)\n');
  process.exit(2);
}
process.stdout.write('ready\n');
// The orchestrator writes one byte to start every client at once, then closes stdin to release the taps.
waitForStdin();
const { result, taps } = runStorm(options);
process.stdout.write(`${JSON.stringify(result)}\n`);
waitForStdin();
closeAll(taps);

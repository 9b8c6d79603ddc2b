// Requests that are malformed, oversized, truncated or carry path-like fields: each gets an
// error reply, leaves no device behind, and the daemon keeps serving.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { privilegedSkipReason } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { encodeFrame } from '../../src/protocol/wire.js';
import { call } from '../../src/client/client.js';
import { closeAll } from '../../src/sys/fd.js';

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Reads frames from a socket until `count` arrived or it closed; returns their JSON and whether it closed. */
function readReplies(socket: Socket, count: number): Promise<{ replies: Record<string, any>[]; closed: boolean }> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const replies: Record<string, any>[] = [];
    const finish = (closed: boolean) => resolve({ replies, closed });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
        const length = buffered.readUInt32BE(0);
        replies.push(JSON.parse(buffered.subarray(4, 4 + length).toString('utf8')));
        buffered = buffered.subarray(4 + length);
      }
      if (replies.length >= count) finish(false);
    });
    socket.once('close', () => finish(true));
  });
}

function rawFrame(body: string): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(Buffer.byteLength(body), 0);
  return Buffer.concat([header, Buffer.from(body)]);
}

describe('request validation', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let user: TestUser;

  before(async () => {
    ns = new Namespace('tg-req');
    ns.addBridge('brreq');
    user = createUser();
    daemon = await startDaemon(ns, `[networks.req]\nbridge = "brreq"\n\n[[allow]]\nusers = ["${user.name}", "root"]\nnetworks = ["req"]\n`);
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
  });

  test('malformed request keeps the connection usable', async () => {
    const socket = await connect(daemon.socket);
    const replies = readReplies(socket, 3);
    socket.write(rawFrame('{not json'));
    socket.write(rawFrame('{"version":1,"op":"open-tap","network":"req","queues":"four"}'));
    socket.write(encodeFrame({ version: 1, op: 'status' }));
    const { replies: [bad, badField, good] } = await replies;
    socket.destroy();
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, 'bad-request');
    assert.match(bad.error.message, /not valid JSON/);
    assert.match(badField.error.message, /"queues" must be an integer/);
    assert.equal(good.ok, true);
    assert.deepEqual(ns.ports('brreq'), []);
  });

  test('oversized request is rejected before its body', async () => {
    const socket = await connect(daemon.socket);
    const replies = readReplies(socket, 1);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(64 * 1024 * 1024, 0);
    socket.write(header);
    const { replies: [reply], closed } = await replies.then(async (result) => ({ ...result, closed: await new Promise<boolean>((resolve) => socket.once('close', () => resolve(true))) }));
    assert.equal(reply.ok, false);
    assert.match(reply.error.message, /too large: .*67108864 bytes exceeds the maximum/);
    assert.equal(closed, true);
    assert.equal(call({ op: 'status' }, daemon.socket).reply.ok, true, 'the next connection is served');
  });

  test('truncated request gets an error reply', async () => {
    const socket = await connect(daemon.socket);
    const replies = readReplies(socket, 1);
    const frame = encodeFrame({ version: 1, op: 'open-tap', network: 'req' });
    socket.end(frame.subarray(0, frame.length - 5));
    const { replies: [reply] } = await replies;
    assert.equal(reply.ok, false);
    assert.match(reply.error.message, /truncated/);
    assert.deepEqual(ns.ports('brreq'), []);
    const next = call({ op: 'open-tap', network: 'req', queues: 1, vnetHdr: false }, daemon.socket);
    closeAll(next.fds);
    assert.equal(next.reply.ok, true);
  });

  test('client dying mid-request leaves nothing behind', async () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const socket = await connect(daemon.socket);
      socket.write(encodeFrame({ version: 1, op: 'open-tap', network: 'req', queues: 2 }));
      socket.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(ns.ports('brreq'), []);
    assert.equal(daemon.process.exitCode, null);
    assert.equal(call({ op: 'status' }, daemon.socket).reply.ok, true);
  });

  test('path-like fields get one fixed reply', () => {
    // A directory the user cannot list, one file inside it, a FIFO and a device node.
    const protectedDirectory = join(daemon.directory, 'protected');
    mkdirSync(protectedDirectory);
    writeFileSync(join(protectedDirectory, 'exists'), '');
    chmodSync(protectedDirectory, 0o700);
    const fifo = join(daemon.directory, 'fifo');
    execFileSync('mkfifo', ['-m', '0666', fifo]);

    const outputs = new Set<string>();
    for (const path of [join(protectedDirectory, 'exists'), join(protectedDirectory, 'missing'), '/dev/ptmx', fifo]) {
      const script = `
        const { call } = await import(${JSON.stringify(new URL('../../src/client/client.js', import.meta.url).pathname)});
        const { reply, fds } = call({ op: 'open-tap', network: 'req', path: ${JSON.stringify(path)} }, ${JSON.stringify(daemon.socket)});
        process.stdout.write(JSON.stringify({ reply, fds: fds.length }));`;
      const started = Date.now();
      const result = runAs(user, process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 });
      assert.equal(result.status, 0, result.stderr);
      assert.ok(Date.now() - started < 5000, `${path}: the reply came at once`);
      outputs.add(result.stdout);
    }
    assert.equal(outputs.size, 1, [...outputs].join('\n'));
    assert.match([...outputs][0], /Unsupported argument \\"path\\"/);
  });

  test('pipelined flood does not starve others', async () => {
    const flood = await connect(daemon.socket);
    const frames = Buffer.concat(Array.from({ length: 3000 }, () => encodeFrame({ version: 1, op: 'check', network: 'req' })));
    flood.write(frames);
    const started = Date.now();
    const status = call({ op: 'status' }, daemon.socket);
    const waited = Date.now() - started;
    flood.destroy();
    assert.equal(status.reply.ok, true);
    assert.ok(waited < 1000, `status waited ${waited} ms behind a pipelined flood`);
  });

  test('user requests are rate limited', () => {
    const script = `
      const { call } = await import(${JSON.stringify(new URL('../../src/client/client.js', import.meta.url).pathname)});
      const codes = {};
      for (let i = 0; i < 400; i++) {
        const { reply } = call({ op: 'check', network: 'req' }, ${JSON.stringify(daemon.socket)});
        const code = reply.ok ? 'ok' : reply.error.code;
        codes[code] = (codes[code] ?? 0) + 1;
      }
      process.stdout.write(JSON.stringify(codes));`;
    const result = runAs(user, process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 });
    assert.equal(result.status, 0, result.stderr);
    const codes = JSON.parse(result.stdout) as Record<string, number>;
    assert.ok((codes['rate-limited'] ?? 0) > 0, result.stdout);
    assert.ok((codes.ok ?? 0) >= 200, result.stdout);
    assert.deepEqual(Object.keys(codes).sort(), ['ok', 'rate-limited']);
  });

  test('trickled frame is cut off', async () => {
    const socket = await connect(daemon.socket);
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(100, 0);
    socket.write(header);
    const started = Date.now();
    // One byte every 2 s would keep an idle timer alive forever; the frame deadline ends it.
    const trickle = setInterval(() => socket.write('x'), 2000);
    const at = await closed;
    clearInterval(trickle);
    assert.ok(at - started < 15_000, `closed after ${at - started} ms`);
  });
});


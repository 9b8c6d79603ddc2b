// The compiled tapgate-helper run as its own process, the way QEMU and libvirt run it.
//
// The helper's --fd is fd 3 of the child. Node creates extra `pipe` stdio slots as Unix
// socketpairs, so the test reads the other end and sees anything the helper sends there (on
// success, one byte carrying the tap's descriptor). TAPGATE_SOCKET always points into a
// temporary directory of the test, so no run can reach a daemon installed on the machine.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, privilegedSkipReason } from '../support/env.js';

const skip = privilegedSkipReason();
const HELPER = join(REPO_ROOT, 'dist', 'src', 'cli', 'main-helper.js');
const TIMEOUT_MS = 5000;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Bytes that arrived on the socket passed as fd 3. */
  channel: Buffer;
  elapsedMs: number;
}

/** Runs `node SCRIPT ARGS` with a socketpair end as fd 3; kills it after TIMEOUT_MS. */
function runWithChannel(script: string[], socketPath: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, script, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, TAPGATE_SOCKET: socketPath },
    });
    let stdout = '';
    let stderr = '';
    const chunks: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8'); });
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
    child.stdio[3]!.on('data', (chunk: Buffer) => { chunks.push(chunk); });
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.on('error', reject);
    // 'close' waits for every stdio stream to end, so all channel data has been read by then.
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, channel: Buffer.concat(chunks), elapsedMs: Date.now() - started });
    });
  });
}

function runHelper(args: string[], socketPath: string): Promise<Run> {
  return runWithChannel([HELPER, ...args], socketPath);
}

/** Listens on `path` in place of the daemon and counts the connections that arrive. */
async function listen(path: string): Promise<{ server: Server; connections: () => number }> {
  let count = 0;
  const server = createServer((connection) => {
    count++;
    connection.destroy();
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, connections: () => count };
}

function temporaryDirectory(): string {
  return mkdtempSync(join(tmpdir(), 'tapgate-helper-'));
}

test('channel control sees bytes written to fd 3', { skip }, async () => {
  const directory = temporaryDirectory();
  try {
    const run = await runWithChannel(['-e', 'require("node:fs").writeSync(3, Buffer.from([0]))'], join(directory, 'tapgate.sock'));
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual([...run.channel], [0]);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper rejects a 16-byte bridge name', { skip }, async () => {
  const directory = temporaryDirectory();
  const socket = join(directory, 'tapgate.sock');
  const daemon = await listen(socket);
  try {
    const run = await runHelper(['--use-vnet', '--br=isolated-net-01X', '--fd=3'], socket);
    assert.equal(run.status, 1);
    assert.ok(run.stderr.includes('isolated-net-01X'), run.stderr);
    assert.ok(run.stderr.includes('too long'), run.stderr);
    assert.ok(run.stderr.includes('16'), run.stderr);
    assert.equal(run.stdout, '');
    assert.equal(run.channel.length, 0);
    assert.equal(daemon.connections(), 0);
  } finally {
    daemon.server.close();
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper rejects names the kernel would refuse', { skip }, async () => {
  const directory = temporaryDirectory();
  const socket = join(directory, 'tapgate.sock');
  const daemon = await listen(socket);
  try {
    for (const name of ['', '..', 'br/0', 'br 0']) {
      const run = await runHelper([`--br=${name}`, '--fd=3'], socket);
      assert.equal(run.status, 1, name);
      assert.ok(run.stderr.includes(`invalid bridge name ${JSON.stringify(name)}`), run.stderr);
      assert.equal(run.channel.length, 0);
    }
    assert.equal(daemon.connections(), 0);
  } finally {
    daemon.server.close();
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper prints usage for an unknown option', { skip }, async () => {
  const directory = temporaryDirectory();
  try {
    const run = await runHelper(['--use-vnet', '--acl=/etc/qemu/bridge.conf', '--br=br0', '--fd=3'], join(directory, 'tapgate.sock'));
    assert.equal(run.status, 1);
    assert.ok(run.stderr.includes('unknown argument "--acl=/etc/qemu/bridge.conf"'), run.stderr);
    assert.ok(run.stderr.includes('Usage: tapgate-helper [--use-vnet] --br=BRIDGE --fd=UNIXFD'), run.stderr);
    assert.equal(run.stdout, '');
    assert.equal(run.channel.length, 0);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper prints usage without --fd', { skip }, async () => {
  const directory = temporaryDirectory();
  try {
    const run = await runHelper(['--use-vnet', '--br=br0'], join(directory, 'tapgate.sock'));
    assert.equal(run.status, 1);
    assert.ok(run.stderr.includes('missing --fd=UNIXFD'), run.stderr);
    assert.ok(run.stderr.includes('Usage: tapgate-helper'), run.stderr);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper reports a missing daemon socket', { skip }, async () => {
  const directory = temporaryDirectory();
  const socket = join(directory, 'tapgate.sock');
  try {
    const run = await runHelper(['--use-vnet', '--br=br0', '--fd=3'], socket);
    assert.equal(run.status, 1);
    assert.ok(run.elapsedMs < TIMEOUT_MS, `took ${run.elapsedMs} ms`);
    assert.ok(run.stderr.includes(socket), run.stderr);
    assert.ok(run.stderr.includes('not found'), run.stderr);
    assert.ok(!run.stderr.includes('parse'), run.stderr);
    assert.equal(run.channel.length, 0);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper reports a stale daemon socket', { skip }, async () => {
  const directory = temporaryDirectory();
  const socket = join(directory, 'tapgate.sock');
  try {
    // A listener killed with SIGKILL leaves its socket file behind, and connect() to it fails with ECONNREFUSED.
    spawnSync(process.execPath, ['-e', `require("node:net").createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, "SIGKILL"))`]);
    assert.ok(statSync(socket).isSocket(), `${socket} is not a socket`);
    const run = await runHelper(['--use-vnet', '--br=br0', '--fd=3'], socket);
    assert.equal(run.status, 1);
    assert.ok(run.elapsedMs < TIMEOUT_MS, `took ${run.elapsedMs} ms`);
    assert.ok(run.stderr.includes(socket), run.stderr);
    assert.ok(run.stderr.includes('connection refused'), run.stderr);
    assert.equal(run.channel.length, 0);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('helper reports a socket path that is a regular file', { skip }, async () => {
  const directory = temporaryDirectory();
  const socket = join(directory, 'tapgate.sock');
  try {
    writeFileSync(socket, '');
    const run = await runHelper(['--br=br0', '--fd=3'], socket);
    assert.equal(run.status, 1);
    assert.ok(run.stderr.includes(socket), run.stderr);
    assert.ok(run.stderr.includes('connection refused'), run.stderr);
    assert.equal(run.channel.length, 0);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

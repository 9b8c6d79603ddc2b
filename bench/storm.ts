// Benchmark 2: a storm of concurrent open-tap requests from many users.
//
// One storm-client process per user connects and sends all of its requests at once; the
// clients start together when every one of them is ready, so the daemon has
// users × requestsPerUser requests in flight.

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Namespace } from '../test/support/netns.js';
import { createUser, removeUser, type TestUser } from '../test/support/users.js';
import { startDaemon } from '../test/support/daemon.js';
import { userReadableRoot } from '../test/support/env.js';
import { Cleanup, killGroup, unitDaemonOptions, UNLIMITED_REQUESTS } from './fixture.js';
import { summarize, type Summary } from './stats.js';
import type { StormClientOptions, StormClientResult } from './storm-client.js';

const BRIDGE = 'tgbst0';
const NETWORK = 'storm';
const CLIENT_TIMEOUT_MS = 120_000;

export interface StormResult {
  status: 'measured';
  users: number;
  requests: number;
  granted: number;
  errors: number;
  errorsByCode: Record<string, number>;
  /** From the first request sent to the last reply read, over all clients (ms). */
  wallMs: number;
  grantsPerSecond: number;
  /** Per-request latency from connect to reply (ms). */
  latency: Summary;
}

function policy(users: TestUser[], perUser: number): string {
  return `
[daemon]
audit_log = "AUDIT_LOG"
${UNLIMITED_REQUESTS}

[networks.${NETWORK}]
bridge = "${BRIDGE}"

[[allow]]
name = "storm users"
users = [${users.map((user) => `"${user.name}"`).join(', ')}]
networks = ["${NETWORK}"]
max_taps = ${perUser}
`;
}

interface RunningClient {
  child: ChildProcess;
  ready: Promise<void>;
  result: Promise<StormClientResult>;
  exited: Promise<void>;
}

function startClient(user: TestUser, options: StormClientOptions): RunningClient {
  const script = join(userReadableRoot(), 'dist', 'bench', 'storm-client.js');
  const child = spawn(process.execPath, [script, JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'pipe'], uid: user.uid, gid: user.gid, detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      if (stdout.startsWith('ready\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`storm client of ${user.name} exited (${code}) before it was ready:\n${stderr}`)));
  });
  // The result line arrives while the client still holds its taps.
  const result = new Promise<StormClientResult>((resolve, reject) => {
    child.stdout!.on('data', () => {
      // Complete once stdout is "ready\n", the result and its newline.
      const lines = stdout.split('\n');
      if (lines.length < 3) return;
      const line = lines[1];
      try {
        resolve(JSON.parse(line) as StormClientResult);
      } catch {
        reject(new Error(`storm client of ${user.name} printed an invalid result: ${line}\n${stderr}`));
      }
    });
    child.once('close', (code) => reject(new Error(`storm client of ${user.name} exited (${code}) without a result:\n${stderr}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  // Only the first of these promises is awaited when a client fails early.
  result.catch(() => undefined);
  ready.catch(() => undefined);
  return { child, ready, result, exited };
}

/** Runs `users` clients with `perUser` concurrent requests each. */
export async function runStorm(userCount: number, perUser: number): Promise<StormResult> {
  const cleanup = new Cleanup();
  try {
    const namespace = new Namespace('tgbench-storm');
    cleanup.add('remove namespace', () => namespace.destroy());
    namespace.addBridge(BRIDGE);
    const users: TestUser[] = [];
    for (let index = 0; index < userCount; index++) {
      const user = createUser('tgbs');
      users.push(user);
      cleanup.add(`remove user ${user.name}`, () => removeUser(user));
    }
    const daemon = await startDaemon(namespace, policy(users, perUser), unitDaemonOptions());
    cleanup.add('stop daemon', () => daemon.stop());

    const options: StormClientOptions = { socket: daemon.socket, network: NETWORK, requests: perUser, timeoutMs: CLIENT_TIMEOUT_MS };
    const clients = users.map((user) => startClient(user, options));
    cleanup.add('stop storm clients', () => clients.forEach((client) => killGroup(client.child.pid)));
    const timer = setTimeout(() => clients.forEach((client) => killGroup(client.child.pid)), CLIENT_TIMEOUT_MS);
    cleanup.add('clear storm timer', () => clearTimeout(timer));

    await Promise.all(clients.map((client) => client.ready));
    // One byte starts a client; end of file then releases its taps.
    for (const client of clients) client.child.stdin!.write('g');
    const results = await Promise.all(clients.map((client) => client.result));
    for (const client of clients) client.child.stdin!.end();
    await Promise.all(clients.map((client) => client.exited));
    return summarizeStorm(results, userCount, perUser);
  } finally {
    await cleanup.run();
  }
}

function summarizeStorm(results: StormClientResult[], userCount: number, perUser: number): StormResult {
  const latencies = results.flatMap((result) => result.latenciesMs);
  const errorsByCode: Record<string, number> = {};
  for (const result of results) {
    for (const [code, count] of Object.entries(result.errors)) errorsByCode[code] = (errorsByCode[code] ?? 0) + count;
  }
  const wallMs = Math.max(...results.map((result) => result.lastReplyAt)) - Math.min(...results.map((result) => result.firstRequestAt));
  const errors = Object.values(errorsByCode).reduce((sum, count) => sum + count, 0);
  if (latencies.length === 0) throw new Error(`Every storm request failed: ${JSON.stringify(errorsByCode)}`);
  return {
    status: 'measured',
    users: userCount,
    requests: userCount * perUser,
    granted: latencies.length,
    errors,
    errorsByCode,
    wallMs,
    grantsPerSecond: latencies.length / (wallMs / 1000),
    latency: summarize(latencies),
  };
}

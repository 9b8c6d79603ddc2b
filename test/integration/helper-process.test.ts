// Both builds of tapgate-helper (Node and native) run as their own process, the way QEMU and
// libvirt run them, with the same expectations for each.
//
// The helper's --fd is fd 3 of the child. Node creates extra `pipe` stdio slots as Unix
// socketpairs, so the test reads the other end and sees anything the helper sends there (on
// success, one byte carrying the tap's descriptor). TAPGATE_SOCKET always points into a
// temporary directory of the test, so no run can reach a daemon installed on the machine.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, privilegedSkipReason } from '../support/env.js';
import { sendWithFds } from '../../src/sys/unix.js';

const skip = privilegedSkipReason();
const NATIVE_HELPER = join(REPO_ROOT, 'dist', 'native', 'tapgate-helper');
/** Each build's command line; `npm test` builds the native one and fails when it cannot. */
const HELPERS: Record<string, string[]> = {
  node: [process.execPath, join(REPO_ROOT, 'dist', 'src', 'cli', 'main-helper.js')],
  native: [NATIVE_HELPER],
};
const TIMEOUT_MS = 5000;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Bytes that arrived on the socket passed as fd 3. */
  channel: Buffer;
  elapsedMs: number;
}

interface RunOptions {
  /** Kills the helper after this long; TIMEOUT_MS by default. */
  killAfterMs?: number;
  /** A descriptor to pass as fd 3 in place of the socketpair; then `channel` stays empty. */
  fd3?: number;
}

/** Runs `COMMAND ARGS` with a socketpair end as fd 3; kills it after TIMEOUT_MS. */
function runWithChannel(command: string[], socketPath: string, options: RunOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(command[0]!, command.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe', options.fd3 ?? 'pipe'],
      env: { PATH: process.env.PATH, TAPGATE_SOCKET: socketPath },
    });
    let stdout = '';
    let stderr = '';
    const chunks: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8'); });
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
    child.stdio[3]?.on('data', (chunk: Buffer) => { chunks.push(chunk); });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.killAfterMs ?? TIMEOUT_MS);
    child.on('error', reject);
    // 'close' waits for every stdio stream to end, so all channel data has been read by then.
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, channel: Buffer.concat(chunks), elapsedMs: Date.now() - started });
    });
  });
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

/** The reply that a stand-in daemon sends to a request. */
interface Answer {
  /** Raw bytes, so malformed replies can be sent. Without them the daemon never replies. */
  bytes?: Buffer;
  /** Descriptors (of /dev/null) sent with the first byte, as the daemon sends a tap's. */
  fds?: number;
  /** Sends the bytes one at a time, this far apart, to a helper that waits for them all. */
  trickleMs?: number;
}

interface StandIn {
  server: Server;
  requests: unknown[];
  /** Bytes that arrived after the request, which a helper never sends. */
  trailing: Buffer[];
  /** Settles when every connection so far has closed. */
  closed: () => Promise<void>;
}

/** Returns the kernel fd behind a connected Node socket, as src/daemon/server.ts does. */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert.equal(typeof fd, 'number', 'the connection has no file descriptor');
  return fd as number;
}

function sendAnswer(connection: Socket, answer: Answer): void {
  const bytes = answer.bytes;
  if (!bytes) return;
  if (answer.trickleMs !== undefined) {
    let sent = 0;
    const timer = setInterval(() => {
      if (sent < bytes.length) connection.write(bytes.subarray(sent, ++sent));
    }, answer.trickleMs);
    connection.on('close', () => clearInterval(timer));
    return;
  }
  let rest = bytes;
  if (answer.fds) {
    // Only the first byte goes out with the descriptors. The helper cannot act before the rest
    // arrives, so it cannot exit before end() runs, which would then fail with EPIPE.
    const fds = Array.from({ length: answer.fds }, () => openSync('/dev/null', 'r'));
    try {
      rest = bytes.subarray(sendWithFds(socketFd(connection), bytes.subarray(0, 1), fds));
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
  }
  connection.end(rest);
}

/**
 * Listens on `path` in place of the daemon: reads one request frame per connection, records its
 * body and sends `answer`.
 */
async function answerWith(path: string, answer: Answer | Buffer): Promise<StandIn> {
  const reply = Buffer.isBuffer(answer) ? { bytes: answer } : answer;
  const requests: unknown[] = [];
  const trailing: Buffer[] = [];
  const closing: Promise<void>[] = [];
  const server = createServer((connection) => {
    let pending = Buffer.alloc(0);
    let answered = false;
    closing.push(new Promise((resolve) => connection.on('close', () => resolve())));
    connection.on('data', (chunk: Buffer) => {
      if (answered) {
        trailing.push(chunk);
        return;
      }
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < 4 || pending.length < 4 + pending.readUInt32BE(0)) return;
      requests.push(JSON.parse(pending.subarray(4, 4 + pending.readUInt32BE(0)).toString('utf8')));
      answered = true;
      sendAnswer(connection, reply);
    });
    connection.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, requests, trailing, closed: async () => { await Promise.all(closing); } };
}

/** Encodes `body` as a frame: a 4-byte big-endian length (or `announced`), then the body. */
function frame(body: string | Buffer, announced?: number): Buffer {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(announced ?? bytes.length, 0);
  return Buffer.concat([header, bytes]);
}

function temporaryDirectory(): string {
  return mkdtempSync(join(tmpdir(), 'tapgate-helper-'));
}

test('channel control sees bytes written to fd 3', { skip }, async () => {
  const directory = temporaryDirectory();
  try {
    const run = await runWithChannel([process.execPath, '-e', 'require("node:fs").writeSync(3, Buffer.from([0]))'], join(directory, 'tapgate.sock'));
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual([...run.channel], [0]);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('the native helper was built', { skip }, () => {
  assert.ok(existsSync(NATIVE_HELPER), `${NATIVE_HELPER} is missing; run "sh scripts/build-native.sh" (needs gcc and libc6-dev)`);
});

for (const [kind, command] of Object.entries(HELPERS)) {
  describe(`${kind} tapgate-helper`, { skip: skip ?? (existsSync(command[0]!) ? undefined : `${command[0]} was not built`) }, () => {
    const runHelper = (args: string[], socketPath: string, options?: RunOptions): Promise<Run> => runWithChannel([...command, ...args], socketPath, options);

    test('helper rejects a 16-byte bridge name', async () => {
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

    test('helper rejects names the kernel would refuse', async () => {
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

    test('helper prints usage for an unknown option', async () => {
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

    test('helper prints usage without --fd', async () => {
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

    test('helper reports a missing daemon socket', async () => {
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

    test('helper reports a stale daemon socket', async () => {
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

    test('helper reports a socket path that is a regular file', async () => {
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

    /** Runs the helper against a stand-in daemon that replies with `answer`, and returns the run and the requests received. */
    async function againstAnswer(answer: Answer | Buffer, args = ['--use-vnet', '--br=br0', '--fd=3'], options: RunOptions = {}): Promise<{ run: Run; requests: unknown[] }> {
      const directory = temporaryDirectory();
      const socket = join(directory, 'tapgate.sock');
      const daemon = await answerWith(socket, answer);
      try {
        return { run: await runHelper(args, socket, options), requests: daemon.requests };
      } finally {
        daemon.server.close();
        rmSync(directory, { recursive: true, force: true });
      }
    }

    const REFUSAL = frame('{"version":1,"ok":false,"error":{"code":"denied","message":"no"}}');

    test('helper sends the open-tap request that QEMU\'s options ask for', async () => {
      const withVnet = await againstAnswer(REFUSAL);
      assert.deepEqual(withVnet.requests, [{ version: 1, op: 'open-tap', network: 'br0', queues: 1, vnetHdr: true, macChosenByVmm: true }]);
      const without = await againstAnswer(REFUSAL, ['--fd=3', '--br=vir\u00e9br']);
      assert.deepEqual(without.requests, [{ version: 1, op: 'open-tap', network: 'vir\u00e9br', queues: 1, vnetHdr: false, macChosenByVmm: true }]);
    });

    test('helper prints a refusal whole, with its escapes decoded', async () => {
      const message = 'Denied: user \u00e9l\u00e8ve may not use "br0" \\ see \u{1F512}\tpolicy \ud800.';
      const { run } = await againstAnswer(frame(JSON.stringify({ version: 1, ok: false, error: { code: 'denied', message } })));
      assert.equal(run.status, 1);
      // An unpaired surrogate cannot be written as UTF-8; both builds print U+FFFD for it.
      assert.equal(run.stderr, `tapgate-helper: ${message.replace('\ud800', '\ufffd')}\n`);
      assert.equal(run.channel.length, 0);
    });

    test('helper refuses a grant that carries no descriptor', async () => {
      const tap = { name: 'tg00000000', ifindex: 9, network: 'br0', bridge: 'br0', mtu: 1500, mac: 'unknown', vnetHdr: true, queues: 1, lease: '00000000' };
      const { run } = await againstAnswer(frame(JSON.stringify({ version: 1, ok: true, op: 'open-tap', tap })));
      assert.equal(run.status, 1);
      assert.ok(run.stderr.includes('carried 0 descriptors for a tap with 1 queues'), run.stderr);
      assert.equal(run.channel.length, 0);
    });

    test('helper rejects replies that are not tapgate replies', async () => {
      const answers: Record<string, Buffer> = {
        'not JSON': frame('HTTP/1.1 400 Bad Request'),
        'a JSON array': frame('[1,2,3]'),
        'no "ok" field': frame('{"version":1}'),
        'trailing bytes': frame('{"version":1,"ok":false,"error":{"message":"x"}} x'),
        'a raw control byte': frame('{"version":1,"ok":false,"error":{"message":"a\nb"}}'),
        'deep nesting': frame(`{"version":1,"x":${'['.repeat(5000)}${']'.repeat(5000)},"ok":false}`),
        'a length past the limit': frame('{}', 0x7fffffff),
      };
      for (const [what, answer] of Object.entries(answers)) {
        const { run } = await againstAnswer(answer);
        assert.equal(run.status, 1, `${what}: ${run.stderr}`);
        assert.equal(run.stderr.trim().split('\n').length, 1, `${what}: ${run.stderr}`);
        assert.match(run.stderr, /^tapgate-helper: .*daemon/, what);
        assert.equal(run.channel.length, 0, what);
      }
    });

    test('helper reports a reply cut short', async () => {
      const { run } = await againstAnswer(frame('{"version":1,"ok":false}').subarray(0, 10));
      assert.equal(run.status, 1);
      assert.ok(run.stderr.includes('closed the connection without a complete reply'), run.stderr);
      assert.equal(run.channel.length, 0);
    });

    const TAP_FIELDS = '"name":"tg00000000","ifindex":9,"network":"br0","bridge":"br0","mtu":1500,"mac":"unknown","vnetHdr":true,"lease":"00000000"';

    test('helper forwards a grant with its descriptor', async () => {
      // JSON.parse() reads all three spellings as the number 1.
      for (const queues of ['1', '1.0', '1e0']) {
        const { run } = await againstAnswer({ bytes: frame(`{"version":1,"ok":true,"op":"open-tap","tap":{${TAP_FIELDS},"queues":${queues}}}`), fds: 1 });
        assert.equal(run.status, 0, `${queues}: ${run.stderr}`);
        assert.equal(run.stderr, '', queues);
        assert.deepEqual([...run.channel], [0], queues);
      }
    });

    test('helper forwards nothing for a malformed grant', async () => {
      const tap = `{${TAP_FIELDS},"queues":1}`;
      const answers: Record<string, string> = {
        'no "op"': `{"version":1,"ok":true,"tap":${tap}}`,
        'another op': `{"version":1,"ok":true,"op":"status","tap":${tap}}`,
        'no "tap"': `{"version":1,"ok":true,"op":"open-tap"}`,
        '"tap" null': `{"version":1,"ok":true,"op":"open-tap","tap":null}`,
        '"tap" an array': `{"version":1,"ok":true,"op":"open-tap","tap":[${tap}]}`,
        '"queues" a string': `{"version":1,"ok":true,"op":"open-tap","tap":{"queues":"1"}}`,
        'a later "tap" without "queues"': `{"version":1,"ok":true,"op":"open-tap","tap":${tap},"tap":{}}`,
        '"ok" with a NUL byte in the key': `{"version":1,"ok\\u0000":true,"op":"open-tap","tap":${tap}}`,
        '"queues" with a leading zero': `{"version":1,"ok":true,"op":"open-tap","tap":{"queues":01}}`,
        '"queues" with a plus sign': `{"version":1,"ok":true,"op":"open-tap","tap":{"queues":+1}}`,
        'nan in another field': `{"version":1,"ok":true,"op":"open-tap","x":nan,"tap":${tap}}`,
        'a hexadecimal number in another field': `{"version":1,"ok":true,"op":"open-tap","x":0x10,"tap":${tap}}`,
      };
      for (const [what, body] of Object.entries(answers)) {
        const { run } = await againstAnswer({ bytes: frame(body), fds: 1 });
        assert.equal(run.status, 1, `${what}: ${run.stderr}`);
        assert.match(run.stderr, /^tapgate-helper: Cannot reach the tapgate daemon at [^\n]*: the reply is not a tapgate reply;[^\n]*\n$/, what);
        assert.equal(run.channel.length, 0, what);
      }
    });

    test('helper rejects a grant of two queues', async () => {
      const { run } = await againstAnswer({ bytes: frame(`{"version":1,"ok":true,"op":"open-tap","tap":{${TAP_FIELDS},"queues":2}}`), fds: 2 });
      assert.equal(run.status, 1);
      assert.equal(run.stderr, "tapgate-helper: The daemon's reply granted a tap with 2 queues, but the request was for 1\n");
      assert.equal(run.channel.length, 0);
    });

    test('helper counts every descriptor of a reply', async () => {
      const grant = await againstAnswer({ bytes: frame(`{"version":1,"ok":true,"op":"open-tap","tap":{${TAP_FIELDS},"queues":1}}`), fds: 9 });
      assert.equal(grant.run.status, 1);
      assert.equal(grant.run.stderr, "tapgate-helper: The daemon's reply carried 9 descriptors for a tap with 1 queues\n");
      assert.equal(grant.run.channel.length, 0);
      const refusal = await againstAnswer({ bytes: REFUSAL, fds: 9 });
      assert.equal(refusal.run.status, 1);
      assert.equal(refusal.run.stderr, 'tapgate-helper: no\n');
    });

    test('helper prints a long refusal whole', async () => {
      const message = `Denied: ${'x'.repeat(5000)}.`;
      const { run } = await againstAnswer(frame(JSON.stringify({ version: 1, ok: false, error: { code: 'denied', message } })));
      assert.equal(run.status, 1);
      assert.equal(run.stderr, `tapgate-helper: ${message}\n`);
    });

    test('helper prints invalid UTF-8 as U+FFFD', async () => {
      const invalid = Buffer.from([0xff, 0xe2, 0x82, 0x41, 0xed, 0xa0, 0x80]);
      const body = Buffer.concat([Buffer.from('{"version":1,"ok":false,"error":{"message":"a'), invalid, Buffer.from('\\u0000b"}}')]);
      const { run } = await againstAnswer(frame(body));
      assert.equal(run.status, 1);
      // One U+FFFD for each maximal invalid subsequence, as Node's WHATWG decoder writes them.
      assert.equal(run.stderr, 'tapgate-helper: a\ufffd\ufffdA\ufffd\ufffd\ufffd\u0000b\n');
    });

    test('helper takes the last of duplicate keys', async () => {
      const { run } = await againstAnswer(frame('{"version":1,"ok":true,"ok":false,"error":{"message":5,"message":"no"}}'));
      assert.equal(run.status, 1);
      assert.equal(run.stderr, 'tapgate-helper: no\n');
    });

    test('helper gives up on a slow daemon', async () => {
      const options = { killAfterMs: 3 * TIMEOUT_MS };
      const [silent, trickling] = await Promise.all([
        againstAnswer({}, undefined, options),
        againstAnswer({ bytes: REFUSAL, trickleMs: 500 }, undefined, options),
      ]);
      for (const [what, { run }] of Object.entries({ silent, trickling })) {
        assert.equal(run.status, 1, `${what}: ${run.stderr}`);
        assert.ok(run.stderr.includes('the daemon sent no reply in time'), `${what}: ${run.stderr}`);
        // The Node build checks its deadline between reads, so it may overrun by one read (500 ms).
        assert.ok(run.elapsedMs >= TIMEOUT_MS - 100, `${what} took ${run.elapsedMs} ms`);
        assert.ok(run.elapsedMs < TIMEOUT_MS + 1500, `${what} took ${run.elapsedMs} ms`);
        assert.equal(run.channel.length, 0, what);
      }
    });

    test('helper quotes arguments as JSON', async () => {
      const directory = temporaryDirectory();
      try {
        const unknown = await runHelper(['--bogus="q"\n', '--br=br0', '--fd=3'], join(directory, 'tapgate.sock'));
        assert.equal(unknown.status, 1);
        assert.ok(unknown.stderr.startsWith('tapgate-helper: unknown argument "--bogus=\\"q\\"\\n"\n'), unknown.stderr);
        const fd = await runHelper(['--br=br0', '--fd=3\t'], join(directory, 'tapgate.sock'));
        assert.equal(fd.status, 1);
        assert.ok(fd.stderr.startsWith('tapgate-helper: invalid --fd value "3\\t": expected a descriptor number\n'), fd.stderr);
      } finally {
        rmSync(directory, { recursive: true, force: true });
      }
    });

    test('helper rejects Unicode whitespace in names', async () => {
      const directory = temporaryDirectory();
      const socket = join(directory, 'tapgate.sock');
      const daemon = await listen(socket);
      try {
        for (const name of ['br\u00a0', 'br\u2028', 'br\u3000', '\ufeffbr']) {
          const run = await runHelper([`--br=${name}`, '--fd=3'], socket);
          assert.equal(run.status, 1, name);
          assert.equal(run.stderr, `tapgate-helper: invalid bridge name ${JSON.stringify(name)}: contains "/", ":", a NUL byte or whitespace\n`);
        }
        assert.equal(daemon.connections(), 0);
      } finally {
        daemon.server.close();
        rmSync(directory, { recursive: true, force: true });
      }
    });

    test('helper writes nothing to the daemon with stderr closed', async () => {
      const directory = temporaryDirectory();
      const socket = join(directory, 'tapgate.sock');
      const daemon = await answerWith(socket, frame('{"version":1}'));
      try {
        // With fd 2 closed, the daemon's socket could take fd 2 and receive the error message.
        const run = await runWithChannel(['/bin/sh', '-c', 'exec "$@" 2>&-', 'sh', ...command, '--br=br0', '--fd=3'], socket);
        await daemon.closed();
        assert.equal(run.status, 1);
        assert.equal(daemon.requests.length, 1);
        assert.equal(Buffer.concat(daemon.trailing).toString('utf8'), '');
      } finally {
        daemon.server.close();
        rmSync(directory, { recursive: true, force: true });
      }
    });

    test('helper checks --fd before asking the daemon', async () => {
      const directory = temporaryDirectory();
      const socket = join(directory, 'tapgate.sock');
      const daemon = await listen(socket);
      const devNull = openSync('/dev/null', 'r');
      try {
        const notSocket = await runHelper(['--br=br0', '--fd=3'], socket, { fd3: devNull });
        assert.equal(notSocket.status, 1);
        assert.equal(notSocket.stderr, 'tapgate-helper: --fd=3 is not a socket; QEMU passes a connected Unix socket as --fd\n');
        const closed = await runHelper(['--br=br0', '--fd=999'], socket);
        assert.equal(closed.status, 1);
        assert.ok(closed.stderr.startsWith('tapgate-helper: --fd=999 is not an open descriptor: bad file descriptor (EBADF);'), closed.stderr);
        assert.equal(daemon.connections(), 0);
      } finally {
        closeSync(devNull);
        daemon.server.close();
        rmSync(directory, { recursive: true, force: true });
      }
    });
  });
}

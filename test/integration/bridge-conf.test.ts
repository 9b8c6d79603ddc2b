// bridge.conf as a policy source, end to end: per-thread file credentials in this process, then
// the real tapgate-helper run as real users against a daemon in a namespace. The helper's --fd
// is one end of a socketpair, so the test receives exactly what QEMU would have received.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, helperScript, privilegedSkipReason, userReadableRoot } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { addToGroup, createGroup, createUser, removeGroup, removeUser, spawnAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { readFileAs, withFileCredentials } from '../../src/sys/credentials.js';
import { SystemError } from '../../src/sys/errors.js';
import { recvWithFds, socketPair } from '../../src/sys/unix.js';
import { closeAll, closeFd } from '../../src/sys/fd.js';

const skip = privilegedSkipReason();
const HELPER_TIMEOUT_MS = 20_000;
const CAP_DAC_OVERRIDE = 1n;
const CAP_DAC_READ_SEARCH = 2n;

interface HelperRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Descriptors that arrived on the helper's --fd socket; the caller closes them. */
  fds: number[];
  /** Bytes that arrived on that socket. */
  bytes: number;
}

/** Runs `HELPER --use-vnet --br=BRIDGE --fd=3` as `user` and collects what it sent on fd 3. */
async function runHelper(user: TestUser, bridge: string, socket: string, options: { command?: string[]; cwd?: string } = {}): Promise<HelperRun> {
  const [mine, theirs] = socketPair(5000);
  const command = options.command ?? [process.execPath, helperScript()];
  try {
    const child = spawnAs(user, command[0]!, [...command.slice(1), '--use-vnet', `--br=${bridge}`, '--fd=3'], { TAPGATE_SOCKET: socket }, {
      stdio: ['ignore', 'pipe', 'pipe', theirs], cwd: options.cwd ?? '/',
    });
    // The child has its own copy now; closing ours lets the read below end at the child's exit.
    closeFd(theirs);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8'); });
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
    const timer = setTimeout(() => child.kill('SIGKILL'), HELPER_TIMEOUT_MS);
    const status = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', resolve);
    });
    clearTimeout(timer);

    const fds: number[] = [];
    let bytes = 0;
    for (;;) {
      const received = recvWithFds(mine, 64, 8);
      fds.push(...received.fds);
      if (received.data.length === 0) break;
      bytes += received.data.length;
    }
    return { status, stdout, stderr, fds, bytes };
  } finally {
    closeFd(mine);
  }
}

/** Interface names from `ip -o link` in the namespace. */
function linkNames(ns: Namespace): string[] {
  return ns.ip('-o', 'link').split('\n').filter(Boolean).map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1] ?? line).sort();
}

function assertIncludes(text: string, parts: string[]): void {
  for (const part of parts) assert.ok(text.includes(part), `${JSON.stringify(part)} missing from: ${text}`);
}

/** Creates a 0755 directory for policy files, so test users can reach the files whose modes allow it. */
function policyDirectory(): string {
  const directory = mkdtempSync(join(tmpdir(), 'tapgate-bridgeconf-'));
  chmodSync(directory, 0o755);
  return directory;
}

function writeFile(path: string, text: string, mode: number, gid = 0): void {
  writeFileSync(path, text);
  chownSync(path, 0, gid);
  chmodSync(path, mode);
}

function daemonPolicy(bridgeConf: string): string {
  return `[daemon]\naudit_log = "AUDIT_LOG"\n\n[bridge_conf]\npath = "${bridgeConf}"\n`;
}

function statusField(status: string, field: string): string[] {
  const line = status.split('\n').find((entry) => entry.startsWith(`${field}:`)) ?? '';
  return line.slice(field.length + 1).trim().split(/\s+/).filter(Boolean);
}

function effectiveCapabilities(status: string): bigint {
  return BigInt(`0x${statusField(status, 'CapEff')[0]}`);
}

function readOpenFile(fd: number): string {
  const buffer = Buffer.alloc(16384);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, buffer.length, 0));
}

describe('file credentials', { skip }, () => {
  let directory: string;
  let reader: TestUser;
  let owner: TestUser;
  let group: { name: string; gid: number };

  before(() => {
    directory = policyDirectory();
    reader = createUser('tgcr');
    owner = createUser('tgco');
    group = createGroup('tgcg');
    writeFile(join(directory, 'root-only'), 'root only\n', 0o600);
    writeFile(join(directory, 'group'), 'group\n', 0o640, group.gid);
    writeFileSync(join(directory, 'owned'), 'owned\n');
    chownSync(join(directory, 'owned'), owner.uid, owner.gid);
    chmodSync(join(directory, 'owned'), 0o600);
  });

  after(() => {
    rmSync(directory, { recursive: true, force: true });
    removeUser(reader);
    removeUser(owner);
    removeGroup(group.name);
  });

  test('readFileAs applies owner permissions', () => {
    assert.throws(() => readFileAs({ uid: reader.uid, gid: reader.gid, groups: [] }, join(directory, 'owned')), (error: Error) => {
      assert.ok(error instanceof SystemError);
      assert.equal(error.code, 'EACCES');
      return true;
    });
    assert.equal(readFileAs({ uid: owner.uid, gid: owner.gid, groups: [] }, join(directory, 'owned')).toString(), 'owned\n');
  });

  test('readFileAs applies supplementary groups', () => {
    const path = join(directory, 'group');
    assert.throws(() => readFileAs({ uid: reader.uid, gid: reader.gid, groups: [] }, path), { code: 'EACCES' });
    assert.equal(readFileAs({ uid: reader.uid, gid: reader.gid, groups: [group.gid] }, path).toString(), 'group\n');
    assert.equal(readFileAs({ uid: reader.uid, gid: group.gid, groups: [] }, path).toString(), 'group\n');
  });

  test('readFileAs denies root-only files to users', () => {
    assert.throws(() => readFileAs({ uid: reader.uid, gid: reader.gid, groups: [0] }, join(directory, 'root-only')), { code: 'EACCES' });
  });

  test('readFileAs restores root file access', () => {
    // Root reads another user's 0600 file only through CAP_DAC_OVERRIDE, so this fails unless restored.
    assert.throws(() => readFileAs({ uid: reader.uid, gid: reader.gid, groups: [] }, join(directory, 'owned')), { code: 'EACCES' });
    assert.equal(readFileSync(join(directory, 'owned'), 'utf8'), 'owned\n');
    assert.equal(readFileAs({ uid: 0, gid: 0, groups: [] }, join(directory, 'owned')).toString(), 'owned\n');
  });

  test('readFileAs rejects a FIFO without blocking', () => {
    const fifo = join(directory, 'fifo');
    spawnSync('mkfifo', ['-m', '0644', fifo]);
    assert.throws(() => readFileAs({ uid: reader.uid, gid: reader.gid, groups: [] }, fifo), (error: Error) => {
      assert.ok(error instanceof SystemError);
      assert.equal(error.code, 'EINVAL');
      assert.ok(error.message.includes('not a regular file'), error.message);
      return true;
    });
  });

  test('withFileCredentials changes this thread only', () => {
    const ownStatus = openSync('/proc/thread-self/status', 'r');
    const ownTid = String(readOpenFile(ownStatus).match(/^Pid:\s+(\d+)/m)?.[1]);
    const others = readdirSync('/proc/self/task').filter((tid) => tid !== ownTid).map((tid) => openSync(`/proc/self/task/${tid}/status`, 'r'));
    try {
      assert.ok(others.length > 0, 'the test process should have other threads');
      const before = readOpenFile(ownStatus);
      const othersBefore = others.map((fd) => statusField(readOpenFile(fd), 'Groups').join(' '));
      assert.notEqual(effectiveCapabilities(before) & (1n << CAP_DAC_OVERRIDE), 0n);

      const { during, othersDuring } = withFileCredentials({ uid: reader.uid, gid: reader.gid, groups: [group.gid] }, () => ({
        during: readOpenFile(ownStatus),
        othersDuring: others.map((fd) => readOpenFile(fd)),
      }));
      assert.equal(statusField(during, 'Uid')[3], String(reader.uid));
      assert.equal(statusField(during, 'Gid')[3], String(reader.gid));
      assert.deepEqual(statusField(during, 'Groups'), [String(group.gid)]);
      assert.equal(effectiveCapabilities(during) & (1n << CAP_DAC_OVERRIDE), 0n);
      assert.equal(effectiveCapabilities(during) & (1n << CAP_DAC_READ_SEARCH), 0n);
      assert.deepEqual(othersDuring.map((status) => statusField(status, 'Groups').join(' ')), othersBefore);
      assert.deepEqual(othersDuring.map((status) => statusField(status, 'Uid')[3]), others.map(() => '0'));

      const restored = readOpenFile(ownStatus);
      assert.deepEqual(statusField(restored, 'Uid'), statusField(before, 'Uid'));
      assert.deepEqual(statusField(restored, 'Gid'), statusField(before, 'Gid'));
      assert.deepEqual(statusField(restored, 'Groups'), statusField(before, 'Groups'));
      assert.equal(effectiveCapabilities(restored), effectiveCapabilities(before));
    } finally {
      closeSync(ownStatus);
      for (const fd of others) closeSync(fd);
    }
  });

  test('withFileCredentials restores after a throw', () => {
    const before = readFileSync('/proc/thread-self/status', 'utf8');
    assert.throws(() => withFileCredentials({ uid: reader.uid, gid: reader.gid, groups: [] }, () => {
      throw new RangeError('inside');
    }), RangeError);
    const after = readFileSync('/proc/thread-self/status', 'utf8');
    assert.deepEqual(statusField(after, 'Uid'), statusField(before, 'Uid'));
    assert.deepEqual(statusField(after, 'Groups'), statusField(before, 'Groups'));
    assert.equal(effectiveCapabilities(after), effectiveCapabilities(before));
  });

  for (const capability of ['setuid', 'setgid']) {
    test(`readFileAs fails loudly without CAP_${capability.toUpperCase()}`, () => {
      const module = join(REPO_ROOT, 'dist', 'src', 'sys', 'credentials.js');
      const script = `import { readFileAs } from ${JSON.stringify(module)};
        try { readFileAs({ uid: ${reader.uid}, gid: ${reader.gid}, groups: [] }, ${JSON.stringify(join(directory, 'group'))}); console.log('read'); }
        catch (error) { console.log(error.message); }`;
      const result = spawnSync('setpriv', [`--bounding-set=-${capability}`, '--', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
      assert.equal(result.status, 0, result.stderr);
      assert.ok(result.stdout.includes('the daemon needs CAP_SETUID and CAP_SETGID'), result.stdout);
    });
  }
});

describe('bridge.conf per-user includes', { skip }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let directory: string;
  const users: Record<string, TestUser> = {};

  before(async () => {
    ns = new Namespace('tg-bconf');
    for (const bridge of ['br0', 'br1', 'br2']) ns.addBridge(bridge);
    for (const name of ['a', 'b', 'c', 'd', 'e']) users[name] = createUser(`tgu${name}`);
    // User e gets group usera as a supplementary group, and with it usera's include file.
    addToGroup(users.e!, users.a!.name);

    directory = policyDirectory();
    writeFile(join(directory, 'bridge.conf'), ['a', 'b', 'c'].reduce((text, name) => `${text}include ${directory}/user-${name}.conf\n`, 'allow br0\n'), 0o644);
    writeFile(join(directory, 'user-a.conf'), 'allow br1\n', 0o640, users.a!.gid);
    writeFile(join(directory, 'user-b.conf'), 'allow br2\n', 0o640, users.b!.gid);
    writeFile(join(directory, 'user-c.conf'), 'deny all\n', 0o640, users.c!.gid);
    daemon = await startDaemon(ns, daemonPolicy(join(directory, 'bridge.conf')));
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    for (const user of Object.values(users)) removeUser(user);
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  const expected: Record<string, Record<string, number>> = {
    a: { br0: 0, br1: 0, br2: 1 },
    b: { br0: 0, br1: 1, br2: 0 },
    c: { br0: 1, br1: 1, br2: 1 },
    d: { br0: 0, br1: 1, br2: 1 },
    e: { br0: 0, br1: 0, br2: 1 },
  };

  for (const [name, row] of Object.entries(expected)) {
    test(`helper matrix for user ${name}`, async () => {
      for (const [bridge, status] of Object.entries(row)) {
        const run = await runHelper(users[name]!, bridge, daemon.socket);
        try {
          assert.equal(run.status, status, `user ${name} on ${bridge}: ${run.stderr}`);
          assert.equal(run.fds.length, status === 0 ? 1 : 0, `user ${name} on ${bridge}`);
          assert.equal(run.stderr === '', status === 0, `user ${name} on ${bridge}: ${run.stderr}`);
        } finally {
          closeAll(run.fds);
        }
      }
    });
  }

  test('denial names only files read', async () => {
    const run = await runHelper(users.d!, 'br1', daemon.socket);
    assert.equal(run.status, 1);
    assertIncludes(run.stderr, ['denied', 'bridge br1', `user ${users.d!.name}`, `uid ${users.d!.uid}`, join(directory, 'bridge.conf'), daemon.config]);
    assert.ok(!run.stderr.includes('user-a.conf'), run.stderr);
  });

  test('deny all names its include', async () => {
    const run = await runHelper(users.c!, 'br0', daemon.socket);
    assert.equal(run.status, 1);
    assertIncludes(run.stderr, [`"deny all" at ${directory}/user-c.conf:1`, `user ${users.c!.name}`]);
  });

  test('edited include applies to next request', async () => {
    const path = join(directory, 'user-b.conf');
    try {
      writeFile(path, 'allow br2\nallow br1\n', 0o640, users.b!.gid);
      const run = await runHelper(users.b!, 'br1', daemon.socket);
      closeAll(run.fds);
      assert.equal(run.status, 0, run.stderr);
      assert.equal(run.fds.length, 1);
    } finally {
      writeFile(path, 'allow br2\n', 0o640, users.b!.gid);
    }
  });

  test('syntax error in readable include fails closed', async () => {
    const path = join(directory, 'user-a.conf');
    try {
      writeFile(path, 'allow br1 # lab\n', 0o640, users.a!.gid);
      const before = linkNames(ns);
      const run = await runHelper(users.a!, 'br0', daemon.socket);
      assert.equal(run.status, 1);
      assert.equal(run.fds.length, 0);
      assertIncludes(run.stderr, [`${path}:1: `, '"#"', 'denied']);
      assert.deepEqual(linkNames(ns), before);

      // User b cannot read that file, so its error does not reach b's requests.
      const other = await runHelper(users.b!, 'br0', daemon.socket);
      closeAll(other.fds);
      assert.equal(other.status, 0, other.stderr);
    } finally {
      writeFile(path, 'allow br1\n', 0o640, users.a!.gid);
    }
  });

  test('missing include is skipped with warning', async () => {
    const main = join(directory, 'bridge.conf');
    const original = readFileSync(main, 'utf8');
    try {
      writeFile(main, `${original}include ${directory}/missing.conf\n`, 0o644);
      const run = await runHelper(users.a!, 'br1', daemon.socket);
      closeAll(run.fds);
      assert.equal(run.status, 0, run.stderr);
      const record = daemon.audit().filter((entry) => entry.event === 'decision').at(-1)!;
      assert.equal(record.decision, 'granted');
      assertIncludes(String(record.reason), [`${main}:5: include ${directory}/missing.conf: not found, skipped`]);
    } finally {
      writeFile(main, original, 0o644);
    }
  });
});

describe('bridge.conf name length', { skip }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let directory: string;
  let user: TestUser;
  const denied = 'isolated-net-01';
  const long = 'lab-bridge-0015';

  before(async () => {
    ns = new Namespace('tg-bcname');
    for (const bridge of [denied, 'lab0', long]) ns.addBridge(bridge);
    user = createUser('tgun');
    directory = policyDirectory();
    writeFile(join(directory, 'bridge.conf'), `allow all\ndeny ${denied}\n`, 0o644);
    daemon = await startDaemon(ns, daemonPolicy(join(directory, 'bridge.conf')));
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  test('16-byte name is rejected before the daemon', async () => {
    const ports = ns.ports(denied);
    const links = linkNames(ns);
    const run = await runHelper(user, `${denied}X`, daemon.socket);
    assert.equal(run.status, 1);
    assertIncludes(run.stderr, [`${denied}X`, 'too long', '16']);
    assert.equal(run.fds.length, 0);
    assert.equal(run.bytes, 0);
    assert.deepEqual(ns.ports(denied), ports);
    assert.deepEqual(linkNames(ns), links);
  });

  test('exact denied name is denied', async () => {
    const ports = ns.ports(denied);
    const run = await runHelper(user, denied, daemon.socket);
    assert.equal(run.status, 1);
    assertIncludes(run.stderr, ['denied', `"deny ${denied}"`]);
    assert.equal(run.fds.length, 0);
    assert.deepEqual(ns.ports(denied), ports);
  });

  test('allowed bridges are granted', async () => {
    assert.equal(Buffer.byteLength(long), 15);
    for (const bridge of ['lab0', long]) {
      const ports = ns.ports(bridge);
      const run = await runHelper(user, bridge, daemon.socket);
      try {
        assert.equal(run.status, 0, run.stderr);
        assert.equal(run.fds.length, 1);
        assert.equal(ns.ports(bridge).length, ports.length + 1, bridge);
      } finally {
        closeAll(run.fds);
      }
    }
  });

  test('16-byte name in bridge.conf fails closed', async () => {
    const path = join(directory, 'bridge.conf');
    try {
      writeFile(path, `allow all\ndeny ${denied}X\n`, 0o644);
      const run = await runHelper(user, 'lab0', daemon.socket);
      assert.equal(run.status, 1);
      assert.equal(run.fds.length, 0);
      assertIncludes(run.stderr, [`${path}:2: name too long`]);
    } finally {
      writeFile(path, `allow all\ndeny ${denied}\n`, 0o644);
    }
  });
});

describe('bridge.conf helper diagnostics', { skip }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let directory: string;
  let relocated: string;
  let user: TestUser;
  let path: string;

  before(async () => {
    ns = new Namespace('tg-bcdiag');
    for (const bridge of ['virbr0', 'br0']) ns.addBridge(bridge);
    ns.ip('link', 'add', 'tgveth0', 'type', 'veth', 'peer', 'name', 'tgveth1');
    user = createUser('tgud');
    directory = policyDirectory();
    path = join(directory, 'bridge.conf');
    daemon = await startDaemon(ns, daemonPolicy(path));

    // A copy of the helper under another prefix, with an allow-all bridge.conf where a helper
    // that derived its policy path from its own location would look.
    relocated = mkdtempSync(join(tmpdir(), 'tapgate-relocated-'));
    chmodSync(relocated, 0o755);
    for (const part of ['bin', 'dist', 'node_modules/koffi', 'node_modules/@koromix', 'node_modules/smol-toml']) {
      cpSync(join(userReadableRoot(), part), join(relocated, part), { recursive: true });
    }
    mkdirSync(join(relocated, 'etc', 'qemu'), { recursive: true });
    writeFileSync(join(relocated, 'etc', 'qemu', 'bridge.conf'), 'allow all\n');
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
    if (directory) rmSync(directory, { recursive: true, force: true });
    if (relocated) rmSync(relocated, { recursive: true, force: true });
  });

  /** Runs the helper and checks the failure contract: exit 1, nothing on fd 3, no new link. */
  async function expectFailure(bridge: string, parts: string[]): Promise<string> {
    const links = linkNames(ns);
    const run = await runHelper(user, bridge, daemon.socket);
    closeAll(run.fds);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.fds.length, 0);
    assert.equal(run.bytes, 0);
    assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    assertIncludes(run.stderr, parts);
    assert.deepEqual(linkNames(ns), links);
    return run.stderr;
  }

  test('missing bridge.conf is not found', async () => {
    rmSync(path, { force: true });
    const stderr = await expectFailure('virbr0', [path, 'not found', 'denied']);
    assert.ok(!/parse/i.test(stderr), stderr);
  });

  test('unreadable bridge.conf is permission denied', async () => {
    writeFile(path, 'allow virbr0\n', 0o600);
    await expectFailure('virbr0', [path, 'permission denied']);
  });

  test('syntax error names line and token', async () => {
    writeFile(path, 'allow virbr0 # main\n', 0o644);
    await expectFailure('virbr0', [`${path}:1: `, '"#"']);
  });

  test('denial names bridge, user and files', async () => {
    writeFile(path, 'allow virbr0\n', 0o644);
    await expectFailure('br0', ['denied', 'bridge br0', `user ${user.name}`, `uid ${user.uid}`, path, daemon.config]);
  });

  test('missing bridge does not exist', async () => {
    writeFile(path, 'allow all\n', 0o644);
    await expectFailure('nosuchbr0', ['nosuchbr0', 'does not exist']);
  });

  test('non-bridge interface is not a bridge', async () => {
    writeFile(path, 'allow all\n', 0o644);
    await expectFailure('tgveth0', ['tgveth0', 'is not a bridge']);
  });

  test('success delivers one fd silently', async () => {
    writeFile(path, 'allow virbr0\n', 0o644);
    const ports = ns.ports('virbr0');
    const run = await runHelper(user, 'virbr0', daemon.socket);
    try {
      assert.equal(run.status, 0, run.stderr);
      assert.equal(run.stderr, '');
      assert.equal(run.stdout, '');
      assert.equal(run.fds.length, 1);
      assert.equal(run.bytes, 1);
      assert.equal(ns.ports('virbr0').length, ports.length + 1);
    } finally {
      closeAll(run.fds);
    }
  });

  test('relocated helper behaves identically', async () => {
    writeFile(path, 'allow virbr0\n', 0o644);
    const command = [join(relocated, 'bin', 'tapgate-helper')];
    const options = { command, cwd: relocated };
    const installedDenial = await runHelper(user, 'br0', daemon.socket);
    const relocatedDenial = await runHelper(user, 'br0', daemon.socket, options);
    assert.equal(relocatedDenial.status, 1);
    assert.equal(relocatedDenial.fds.length, 0);
    assert.equal(relocatedDenial.stderr, installedDenial.stderr);

    const granted = await runHelper(user, 'virbr0', daemon.socket, options);
    try {
      assert.equal(granted.status, 0, granted.stderr);
      assert.equal(granted.stderr, '');
      assert.equal(granted.fds.length, 1);
    } finally {
      closeAll(granted.fds);
    }
  });
});

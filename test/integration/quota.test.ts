// Per-user tap quotas against a real daemon, real users and real taps in a network namespace.
// The quota key is (uid, network), and slots come back when a tap disappears (also after SIGKILL).
// Concurrent requests never exceed the limit, and a restarted daemon rebuilds the count.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT, privilegedSkipReason, tapgateScript, userReadableRoot } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, spawnAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { waitForValue } from '../support/wait.js';

const skip = privilegedSkipReason();
const spawned = new Set<ChildProcess>();

/**
 * Kills every process group this file started that is still running, and waits (up to 5 s) for
 * the group leaders to exit, because userdel rejects a user who still has processes.
 */
async function killSpawned(): Promise<void> {
  const running = [...spawned].filter((child) => child.exitCode === null && child.signalCode === null && child.pid !== undefined);
  spawned.clear();
  for (const child of running) {
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
  }
  await Promise.race([Promise.all(running.map(exited)), sleep(5000)]);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

interface TapLink { ifname: string; ifalias?: string; master?: string }

/** tapgate's taps in the namespace (name tg + 8 hex digits), with their alias and bridge. */
function taps(namespace: Namespace): TapLink[] {
  return namespace.ipJson<TapLink[]>('link', 'show').filter((link) => /^tg[0-9a-f]{8}$/.test(link.ifname));
}

function tapsOwnedBy(namespace: Namespace, user: TestUser, network: string): TapLink[] {
  return taps(namespace).filter((link) => link.ifalias?.includes(`uid=${user.uid} network=${network} `));
}

/** A `tapgate run` launcher whose "VM" is a sleep that inherits the tap. */
interface Vm {
  process: ChildProcess;
  tap: string;
}

type VmStart = { granted: true; vm: Vm } | { granted: false; status: number | null; stderr: string };

async function startVm(user: TestUser, socket: string, network: string): Promise<VmStart> {
  // `sh -c` ignores the -netdev arguments that tapgate run appends for QEMU.
  const child = spawnAs(user, process.execPath, [tapgateScript(), 'run', '--network', network, '--', 'sh', '-c', 'exec sleep 120'],
    { TAPGATE_SOCKET: socket }, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  spawned.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk) => { stderr += chunk; });
  const outcome = await waitForValue(`tapgate run on ${network} to get a tap or exit`, (): { tap: string } | { status: number } | undefined => {
    const match = /tapgate: tap (tg[0-9a-f]{8}) on network/.exec(stderr);
    if (match) return { tap: match[1] };
    if (child.exitCode !== null) return { status: child.exitCode };
    return undefined;
  }, 15_000);
  if ('tap' in outcome) return { granted: true, vm: { process: child, tap: outcome.tap } };
  await exited(child);
  return { granted: false, status: outcome.status, stderr };
}

async function startGranted(user: TestUser, socket: string, network: string): Promise<Vm> {
  const result = await startVm(user, socket, network);
  if (!result.granted) assert.fail(`${user.name} on ${network} was refused (exit ${result.status}): ${result.stderr}`);
  return result.vm;
}

/** Stops a VM the normal way: SIGTERM to the launcher, which forwards it to the VM. */
async function stopVm(vm: Vm): Promise<void> {
  vm.process.kill('SIGTERM');
  await exited(vm.process);
}

/** Returns the pid of the launcher's child, the process that holds the tap, once it has started. */
async function vmPid(vm: Vm): Promise<number> {
  const pid = vm.process.pid!;
  const children = await waitForValue(`launcher ${pid} to start its child`, () => {
    const listed = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return listed.length > 0 ? listed : undefined;
  }, 15_000);
  assert.equal(children.length, 1, `launcher ${pid} has children ${children.join(', ')}`);
  return children[0];
}

/** Writes a client that opens one tap when it reads "go", prints the result, and holds the tap until stdin closes. */
function writeHolderScript(directory: string): string {
  const client = join(userReadableRoot(), 'dist', 'src', 'client', 'client.js');
  const script = join(directory, 'holder.mjs');
  writeFileSync(script, `
import { openTap } from ${JSON.stringify(client)};
import { createInterface } from 'node:readline';
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
setTimeout(() => process.exit(3), 120000).unref();
process.stdout.write('ready\\n');
await lines.next();
let held;
try {
  const { grant, fds } = openTap({ network: process.argv[2] });
  held = fds;
  process.stdout.write(JSON.stringify({ ok: true, tap: grant.name, fds: held.length }) + '\\n');
} catch (error) {
  process.stdout.write(JSON.stringify({ ok: false, code: error.code, message: error.message }) + '\\n');
}
await lines.next();
process.exit(0);
`);
  chmodSync(script, 0o644);
  return script;
}

interface HolderResult { ok: boolean; tap?: string; code?: string; message?: string }

class Holder {
  readonly process: ChildProcess;
  private output = '';

  constructor(user: TestUser, script: string, socket: string, network: string) {
    this.process = spawnAs(user, process.execPath, [script, network], { TAPGATE_SOCKET: socket }, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    spawned.add(this.process);
    this.process.stdout!.on('data', (chunk) => { this.output += chunk; });
    this.process.stderr!.on('data', (chunk) => { this.output += chunk; });
  }

  ready(): Promise<true> {
    return waitForValue('a holder to start', () => (this.output.includes('ready\n') ? true : undefined), 15_000);
  }

  go(): void {
    this.process.stdin!.write('go\n');
  }

  result(): Promise<HolderResult> {
    return waitForValue('a holder to report its request', () => {
      const line = this.output.split('\n').find((text) => text.startsWith('{'));
      return line === undefined ? undefined : (JSON.parse(line) as HolderResult);
    }, 15_000);
  }

  async release(): Promise<void> {
    this.process.stdin!.end();
    await exited(this.process);
  }
}

describe('quota', { skip }, () => {
  let namespace: Namespace;
  let users: TestUser[] = [];
  let daemons: DaemonHandle[] = [];
  let directory: string;
  let holderScript: string;

  beforeEach(() => {
    namespace = new Namespace('tgquota');
    directory = mkdtempSync(join(tmpdir(), 'tapgate-quota-'));
    chmodSync(directory, 0o755);
    holderScript = writeHolderScript(directory);
  });

  afterEach(async () => {
    await killSpawned();
    for (const daemon of daemons) await daemon.stop();
    daemons = [];
    namespace.destroy();
    for (const user of users) removeUser(user);
    users = [];
    rmSync(directory, { recursive: true, force: true });
  });

  function newUser(): TestUser {
    const user = createUser();
    users.push(user);
    return user;
  }

  async function newDaemon(policy: string): Promise<DaemonHandle> {
    const daemon = await startDaemon(namespace, policy);
    daemons.push(daemon);
    return daemon;
  }

  test('quota keyed by user and network', async () => {
    const userA = newUser();
    const userB = newUser();
    namespace.addBridge('br-a');
    namespace.addBridge('br-b');
    namespace.addBridge('br-d');
    const daemon = await newDaemon(`
[daemon]
audit_log = "AUDIT_LOG"
[networks.na]
bridge = "br-a"
[networks.nb]
bridge = "br-b"
[networks.nd]
bridge = "br-d"
[[allow]]
users = ["${userA.name}"]
networks = ["na"]
max_taps = 1
[[allow]]
users = ["${userA.name}"]
networks = ["nb"]
max_taps = 1
[[allow]]
users = ["${userA.name}"]
networks = ["nd"]
max_taps = 1
[[allow]]
users = ["${userB.name}"]
networks = ["na"]
max_taps = 5
[[allow]]
users = ["${userB.name}"]
networks = ["nb"]
max_taps = 0
`);
    const socket = daemon.socket;

    // A tap on one network does not use up the quota of another.
    const vm1 = await startGranted(userA, socket, 'na');
    const vm2 = await startGranted(userA, socket, 'nb');
    assert.equal(tapsOwnedBy(namespace, userA, 'na').length, 1);
    assert.equal(tapsOwnedBy(namespace, userA, 'nb').length, 1);

    // Other users' taps on the same bridge do not count against userA.
    const others = [];
    for (let index = 0; index < 3; index++) others.push(await startGranted(userB, socket, 'na'));
    await stopVm(vm1);
    const vm3 = await startGranted(userA, socket, 'na');
    assert.equal(namespace.ports('br-a').length, 4);

    // A second tap on na exceeds userA's quota of 1.
    const vm4 = await startVm(userA, socket, 'na');
    assert.equal(vm4.granted, false);
    if (!vm4.granted) {
      assert.equal(vm4.status, 1);
      assert.match(vm4.stderr, /quota/);
      assert.match(vm4.stderr, /br-a/);
      assert.match(vm4.stderr, /1 of 1 taps in use/);
    }
    assert.equal(tapsOwnedBy(namespace, userA, 'na').length, 1);

    // A normal stop frees the slot at once.
    await stopVm(vm3);
    const vm5 = await startGranted(userA, socket, 'na');

    // So does SIGKILL of the process holding the tap.
    process.kill(await vmPid(vm5), 'SIGKILL');
    await exited(vm5.process);
    const vm6 = await startGranted(userA, socket, 'na');
    assert.equal(tapsOwnedBy(namespace, userA, 'na').length, 1);
    assert.deepEqual(tapsOwnedBy(namespace, userA, 'na').map((link) => link.ifname), [vm6.tap]);

    // A rule with max_taps = 0 gets a message about a quota of 0, not a plain denial.
    const zero = await startVm(userB, socket, 'nb');
    assert.equal(zero.granted, false);
    if (!zero.granted) {
      assert.match(zero.stderr, /quota/);
      assert.match(zero.stderr, /br-b/);
      assert.match(zero.stderr, /is 0/);
    }

    // A bridge deleted after the policy was loaded is reported as missing, not as a full quota,
    // even while userA's only slot on it is in use.
    const vmOnD = await startGranted(userA, socket, 'nd');
    namespace.ip('link', 'del', 'br-d');
    const missing = await startVm(userA, socket, 'nd');
    assert.equal(missing.granted, false);
    if (!missing.granted) {
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /br-d/);
      assert.match(missing.stderr, /does not exist/);
      assert.doesNotMatch(missing.stderr, /quota/i);
    }
    // The failed request took no slot: once the VM stops and the bridge is back, the slot is free.
    await stopVm(vmOnD);
    namespace.addBridge('br-d');
    const vm7 = await startGranted(userA, socket, 'nd');
    assert.equal(tapsOwnedBy(namespace, userA, 'nd').length, 1);

    const decisions = daemon.audit().filter((record) => record.event === 'decision' && record.uid === userA.uid);
    assert.equal(decisions.filter((record) => record.decision === 'denied' && String(record.reason).includes('quota')).length, 1);
    assert.equal(decisions.filter((record) => record.decision === 'error' && String(record.reason).includes('does not exist')).length, 1);

    for (const vm of [vm2, vm6, vm7, ...others]) await stopVm(vm);
    await waitForValue('every tap to disappear', () => (taps(namespace).length === 0 ? true : undefined), 15_000);
  });

  test('bridge deletion keeps taps counted', async () => {
    const user = newUser();
    namespace.addBridge('br-e');
    const daemon = await newDaemon(`
[networks.ne]
bridge = "br-e"
[[allow]]
users = ["${user.name}"]
networks = ["ne"]
max_taps = 1
`);
    const vm = await startGranted(user, daemon.socket, 'ne');
    // Deleting the bridge detaches the tap (the kernel sends RTM_DELLINK for the port), but the
    // tap lives on with its VM and still holds the user's only slot.
    namespace.ip('link', 'del', 'br-e');
    namespace.addBridge('br-e');
    await sleep(200);
    assert.equal(tapsOwnedBy(namespace, user, 'ne').length, 1);
    const second = await startVm(user, daemon.socket, 'ne');
    assert.equal(second.granted, false);
    if (!second.granted) assert.match(second.stderr, /1 of 1 taps in use/);
    await stopVm(vm);
  });

  test('30 concurrent requests against quota 10', async () => {
    const user = newUser();
    namespace.addBridge('br-race');
    const quota = 10;
    const requests = 30;
    const daemon = await newDaemon(`
[daemon]
audit_log = "AUDIT_LOG"
[networks.race]
bridge = "br-race"
[[allow]]
users = ["${user.name}"]
networks = ["race"]
max_taps = ${quota}
`);
    const holders = Array.from({ length: requests }, () => new Holder(user, holderScript, daemon.socket, 'race'));
    await Promise.all(holders.map((holder) => holder.ready()));
    const started = Date.now();
    for (const holder of holders) holder.go();
    const results = await Promise.all(holders.map((holder) => holder.result()));
    const elapsed = Date.now() - started;

    const granted = results.filter((result) => result.ok);
    const refused = results.filter((result) => !result.ok);
    process.stderr.write(`# race: ${granted.length} granted, ${refused.length} refused in ${elapsed} ms\n`);
    assert.equal(granted.length, quota);
    assert.equal(refused.length, requests - quota);
    assert.deepEqual([...new Set(refused.map((result) => result.code))], ['quota']);
    for (const result of refused) {
      assert.match(result.message!, /quota/);
      assert.match(result.message!, /br-race/);
      assert.match(result.message!, /10 of 10 taps in use/);
    }
    assert.equal(new Set(granted.map((result) => result.tap)).size, quota);
    assert.equal(tapsOwnedBy(namespace, user, 'race').length, quota);
    assert.equal(namespace.ports('br-race').length, quota);

    const decisions = daemon.audit().filter((record) => record.event === 'decision');
    assert.equal(decisions.filter((record) => record.decision === 'granted').length, quota);
    assert.equal(decisions.filter((record) => record.decision === 'denied').length, requests - quota);

    await Promise.all(holders.map((holder) => holder.release()));
    await waitForValue('the race taps to disappear', () => (tapsOwnedBy(namespace, user, 'race').length === 0 ? true : undefined), 15_000);
  });

  test('bridge flapping never reports quota', async () => {
    const user = newUser();
    namespace.addBridge('br-flap');
    const requests = 30;
    const daemon = await newDaemon(`
[networks.flap]
bridge = "br-flap"
[[allow]]
users = ["${user.name}"]
networks = ["flap"]
max_taps = 64
`);
    const holders = Array.from({ length: requests }, () => new Holder(user, holderScript, daemon.socket, 'flap'));
    await Promise.all(holders.map((holder) => holder.ready()));
    // Deletes and re-creates the bridge 300 times while the requests run, so that some requests
    // find it missing and some lose it between the bridge check and the attach.
    const flapper = spawn('ip', ['netns', 'exec', namespace.name, 'sh', '-c',
      'for i in $(seq 300); do ip link del br-flap 2>/dev/null; ip link add br-flap type bridge && ip link set br-flap up; done'],
    { stdio: 'ignore', detached: true });
    spawned.add(flapper);
    for (const holder of holders) holder.go();
    const results = await Promise.all(holders.map((holder) => holder.result()));
    await exited(flapper);

    const granted = results.filter((result) => result.ok).length;
    const missing = results.filter((result) => !result.ok && result.code === 'bridge-missing').length;
    const lostDuringAttach = results.filter((result) => result.message?.includes('while tap')).length;
    process.stderr.write(`# bridge flapping: ${granted} granted, ${missing} bridge missing, ${lostDuringAttach} of them lost during the attach\n`);
    for (const result of results.filter((outcome) => !outcome.ok)) {
      assert.equal(result.code, 'bridge-missing', result.message);
      assert.match(result.message!, /Bridge br-flap of network "flap" does not exist/);
      assert.doesNotMatch(result.message!, /quota/i);
    }
    assert.equal(granted + missing, requests);
    assert.equal(tapsOwnedBy(namespace, user, 'flap').length, granted);
    await Promise.all(holders.map((holder) => holder.release()));
  });

  test('SIGKILL of holder releases tap within 2 s', async () => {
    const user = newUser();
    namespace.addBridge('br-kill');
    const daemon = await newDaemon(`
[daemon]
audit_log = "AUDIT_LOG"
[networks.nk]
bridge = "br-kill"
[[allow]]
users = ["${user.name}"]
networks = ["nk"]
max_taps = 1
`);
    const vm = await startGranted(user, daemon.socket, 'nk');
    assert.deepEqual(namespace.ports('br-kill'), [vm.tap]);
    const holderPid = await vmPid(vm);
    // The launcher must have closed its copies: only the VM's process holds the tap.
    const launcherFds = execFileSync('ls', ['-l', `/proc/${vm.process.pid}/fd`], { encoding: 'utf8' });
    assert.doesNotMatch(launcherFds, /\/dev\/net\/tun/);
    // Nor does the daemon keep one, or the kernel could not remove the tap when the VM dies.
    const daemonFds = execFileSync('ls', ['-l', `/proc/${daemon.process.pid}/fd`], { encoding: 'utf8' });
    assert.doesNotMatch(daemonFds, /\/dev\/net\/tun/);

    const killed = Date.now();
    process.kill(holderPid, 'SIGKILL');
    await waitForValue('the tap to disappear', () => (namespace.links().includes(vm.tap) ? undefined : true), 2000);
    const tapGone = Date.now() - killed;
    await waitForValue('the lease-end record', () => daemon.audit().find((record) => record.event === 'lease-end' && record.tap === vm.tap), 2000);
    const leaseEnded = Date.now() - killed;
    process.stderr.write(`# SIGKILL release: tap gone after ${tapGone} ms, lease ended after ${leaseEnded} ms\n`);
    assert.ok(leaseEnded <= 2000, `lease ended after ${leaseEnded} ms`);
    assert.deepEqual(namespace.ports('br-kill'), []);

    const next = await startGranted(user, daemon.socket, 'nk');
    assert.deepEqual(namespace.ports('br-kill'), [next.tap]);
    await stopVm(next);
  });

  test('daemon restart rebuilds quota from live taps', async () => {
    const user = newUser();
    namespace.addBridge('br-restart');
    const policy = `
[networks.nr]
bridge = "br-restart"
[[allow]]
users = ["${user.name}"]
networks = ["nr"]
max_taps = 2
`;
    const first = await newDaemon(policy);
    const holders = [new Holder(user, holderScript, first.socket, 'nr'), new Holder(user, holderScript, first.socket, 'nr')];
    await Promise.all(holders.map((holder) => holder.ready()));
    for (const holder of holders) holder.go();
    const held = await Promise.all(holders.map((holder) => holder.result()));
    assert.deepEqual(held.map((result) => result.ok), [true, true]);

    first.process.kill('SIGKILL');
    await exited(first.process);
    assert.equal(tapsOwnedBy(namespace, user, 'nr').length, 2);

    const second = await newDaemon(policy);
    const adopted = second.output().split('\n').filter((line) => line.includes('"Adopted a live tap"') && line.includes(`"uid":${user.uid},`));
    assert.equal(adopted.length, 2);
    for (const result of held) assert.ok(adopted.some((line) => line.includes(`"tap":"${result.tap}"`)), `${result.tap} not adopted`);

    const extra = new Holder(user, holderScript, second.socket, 'nr');
    await extra.ready();
    extra.go();
    const refused = await extra.result();
    assert.equal(refused.ok, false);
    assert.equal(refused.code, 'quota');
    assert.match(refused.message!, /2 of 2 taps in use/);
    await extra.release();

    await Promise.all(holders.map((holder) => holder.release()));
    await waitForValue('the held taps to disappear', () => (tapsOwnedBy(namespace, user, 'nr').length === 0 ? true : undefined), 15_000);
    const again = [new Holder(user, holderScript, second.socket, 'nr'), new Holder(user, holderScript, second.socket, 'nr')];
    await Promise.all(again.map((holder) => holder.ready()));
    for (const holder of again) holder.go();
    const results = await Promise.all(again.map((holder) => holder.result()));
    assert.deepEqual(results.map((result) => result.ok), [true, true]);
    await Promise.all(again.map((holder) => holder.release()));
  });

  test('name collision never adopts existing interface', () => {
    // A persistent tap and a bridge occupy the first two names the generator returns.
    namespace.ip('tuntap', 'add', 'tgdeadbeef', 'mode', 'tap');
    namespace.ip('link', 'add', 'tgcafe0001', 'type', 'bridge');
    try {
      const script = join(directory, 'collide.mjs');
      const grant = join(REPO_ROOT, 'dist', 'src', 'daemon', 'grant.js');
      writeFileSync(script, `
import { createUniqueTap } from ${JSON.stringify(grant)};
import { closeAll } from ${JSON.stringify(join(REPO_ROOT, 'dist', 'src', 'sys', 'fd.js'))};
const ids = ['deadbeef', 'cafe0001', '0badf00d'];
const created = createUniqueTap(1, false, () => ids.shift());
let exhausted;
try {
  createUniqueTap(1, false, () => 'deadbeef');
} catch (error) {
  exhausted = { code: error.code, message: error.message };
}
console.log(JSON.stringify({ name: created.name, exhausted }));
closeAll(created.fds);
`);
      const result = namespace.exec(process.execPath, [script]);
      assert.equal(result.status, 0, result.stderr);
      const output = JSON.parse(result.stdout) as { name: string; exhausted: { code: string; message: string } };
      assert.equal(output.name, 'tg0badf00d');
      assert.equal(output.exhausted.code, 'EBUSY');
      assert.match(output.exhausted.message, /all 16 names tried already exist/);

      // The pre-existing tap is untouched: still persistent, no alias, no bridge, still down.
      const [existing] = namespace.ipJson<{ ifalias?: string; master?: string; flags: string[]; linkinfo: { info_data: { persist: boolean } } }[]>('-d', 'link', 'show', 'tgdeadbeef');
      assert.equal(existing.linkinfo.info_data.persist, true);
      assert.equal(existing.ifalias, undefined);
      assert.equal(existing.master, undefined);
      assert.ok(!existing.flags.includes('UP'));
      assert.ok(namespace.links().includes('tgcafe0001'));
      assert.ok(!namespace.links().includes('tg0badf00d'));
    } finally {
      namespace.ip('link', 'del', 'tgdeadbeef');
      namespace.ip('link', 'del', 'tgcafe0001');
    }
  });

  test('check explains quota usage', async () => {
    const user = newUser();
    namespace.addBridge('br-check');
    const daemon = await newDaemon(`
[networks.nx]
bridge = "br-check"
[[allow]]
name = "lab"
users = ["${user.name}"]
networks = ["nx"]
max_taps = 1
`);
    const before = runAs(user, process.execPath, [tapgateScript(), 'check', '--network', 'nx'], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(before.status, 0, before.stderr);
    assert.match(before.stdout, /decision: allowed/);
    assert.match(before.stdout, /allow rule "lab" at .*tapgate\.toml:4/);
    assert.match(before.stdout, /max_taps 1/);
    assert.match(before.stdout, /0 of 1 taps in use/);

    const vm = await startGranted(user, daemon.socket, 'nx');
    const full = runAs(user, process.execPath, [tapgateScript(), 'check', '--network', 'nx'], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(full.status, 1);
    assert.match(full.stdout, /decision: allowed/);
    assert.match(full.stdout, /1 of 1 taps in use; the quota is full/);
    await stopVm(vm);
  });
});

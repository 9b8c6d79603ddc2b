// The audit log against a real daemon: one JSON line with the fixed schema for every decision
// and every lease end, and `tapgate audit` reading it back with its filters.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { privilegedSkipReason, tapgateScript } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { waitForValue } from '../support/wait.js';

const skip = privilegedSkipReason();

const SCHEMA = ['time', 'event', 'uid', 'user', 'pid', 'request', 'decision', 'rule', 'reason', 'network', 'bridge', 'tap', 'mac', 'lease'];

/** Runs `tapgate ARGS` as root (the test process) and returns its result. */
function tapgateAsRoot(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [tapgateScript(), ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
}

describe('audit log', { skip }, () => {
  let namespace: Namespace;
  let users: TestUser[] = [];
  let daemon: DaemonHandle | undefined;

  beforeEach(() => {
    namespace = new Namespace('tgaudit');
  });

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
    namespace.destroy();
    for (const user of users) removeUser(user);
    users = [];
  });

  /** Starts a daemon where `allowed` may hold one tap on "lab" or "gone" (whose bridge is missing), and `stranger` matches no rule. */
  async function setUp(): Promise<{ allowed: TestUser; stranger: TestUser; daemon: DaemonHandle }> {
    const allowed = createUser();
    const stranger = createUser();
    users.push(allowed, stranger);
    namespace.addBridge('br-lab');
    daemon = await startDaemon(namespace, `
[daemon]
audit_log = "AUDIT_LOG"
[networks.lab]
bridge = "br-lab"
[networks.gone]
bridge = "br-gone"
[[allow]]
name = "lab users"
users = ["${allowed.name}"]
networks = ["lab", "gone"]
max_taps = 1
`);
    return { allowed, stranger, daemon };
  }

  function run(user: TestUser, socket: string, network: string) {
    return runAs(user, process.execPath, [tapgateScript(), 'run', '--dry-run', '--network', network, '--', 'qemu-system-x86_64'], { env: { TAPGATE_SOCKET: socket } });
  }

  test('records every decision and lease end', async () => {
    const { allowed, stranger, daemon } = await setUp();
    const granted = run(allowed, daemon.socket, 'lab');
    assert.equal(granted.status, 0, granted.stderr);
    const denied = run(stranger, daemon.socket, 'lab');
    assert.equal(denied.status, 1);
    const unknown = run(allowed, daemon.socket, 'nowhere');
    assert.equal(unknown.status, 1);
    const missingBridge = run(allowed, daemon.socket, 'gone');
    assert.equal(missingBridge.status, 1);
    await waitForValue('the lease-end record', () => daemon.audit().find((record) => record.event === 'lease-end'));

    const lines = readFileSync(daemon.auditLog, 'utf8').trim().split('\n');
    assert.equal(lines.length, 5);
    const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const record of records) {
      assert.deepEqual(Object.keys(record), SCHEMA);
      assert.equal(new Date(record.time as string).toISOString(), record.time);
      assert.equal(typeof record.uid, 'number');
      assert.equal(typeof record.reason, 'string');
    }
    assert.equal(statSync(daemon.auditLog).mode & 0o777, 0o640);

    const [grant, refusal, unknownNetwork, bridgeError, leaseEnd] = [
      records.find((record) => record.decision === 'granted')!,
      records.find((record) => record.uid === stranger.uid)!,
      records.find((record) => record.network === null && record.event === 'decision')!,
      records.find((record) => record.decision === 'error')!,
      records.find((record) => record.event === 'lease-end')!,
    ];
    assert.equal(grant.user, allowed.name);
    assert.equal(grant.network, 'lab');
    assert.equal(grant.bridge, 'br-lab');
    assert.match(grant.tap as string, /^tg[0-9a-f]{8}$/);
    assert.match(grant.mac as string, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.match(grant.rule as string, /^allow rule "lab users" at .*tapgate\.toml:8$/);
    assert.deepEqual((grant.request as { op: string; network: string }).network, 'lab');

    assert.equal(refusal.decision, 'denied');
    assert.equal(refusal.user, stranger.name);
    assert.equal(refusal.rule, null);
    assert.equal(refusal.tap, null);
    assert.match(refusal.reason as string, /no allow rule/);

    assert.equal(unknownNetwork.decision, 'denied');
    assert.match(unknownNetwork.reason as string, /"nowhere" is neither a network/);

    assert.equal(bridgeError.network, 'gone');
    assert.match(bridgeError.reason as string, /br-gone .*does not exist/);

    assert.equal(leaseEnd.decision, 'ended');
    assert.equal(leaseEnd.user, allowed.name);
    assert.equal(leaseEnd.uid, allowed.uid);
    assert.equal(leaseEnd.tap, grant.tap);
    assert.equal(leaseEnd.lease, grant.lease);
    assert.equal(leaseEnd.request, null);
  });

  test('tapgate audit filters by user and time', async () => {
    const { allowed, stranger, daemon } = await setUp();
    assert.equal(run(allowed, daemon.socket, 'lab').status, 0);
    assert.equal(run(stranger, daemon.socket, 'lab').status, 1);
    await waitForValue('the lease-end record', () => daemon.audit().find((record) => record.event === 'lease-end'));

    const table = tapgateAsRoot(['audit', '--file', daemon.auditLog]);
    assert.equal(table.status, 0, table.stderr);
    const rows = table.stdout.trim().split('\n');
    assert.match(rows[0], /^TIME\s+DECISION\s+USER\s+NETWORK\s+TAP\s+RULE\s+REASON$/);
    assert.equal(rows.length, 4);
    assert.ok(rows.some((row) => row.includes('granted') && row.includes(`${allowed.name}(${allowed.uid})`)));
    assert.ok(rows.some((row) => row.includes('denied') && row.includes(stranger.name)));
    assert.ok(rows.some((row) => row.includes('ended')));

    const byName = tapgateAsRoot(['audit', '--json', '--user', stranger.name, '--file', daemon.auditLog]);
    assert.equal(byName.status, 0, byName.stderr);
    const strangerRecords = byName.stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(strangerRecords.length, 1);
    assert.equal(strangerRecords[0].decision, 'denied');

    const byUid = tapgateAsRoot(['audit', '--json', '--user', String(allowed.uid), '--file', daemon.auditLog]);
    assert.deepEqual(byUid.stdout.trim().split('\n').map((line) => JSON.parse(line).event), ['decision', 'lease-end']);

    const recent = tapgateAsRoot(['audit', '--json', '--since', '10m', '--file', daemon.auditLog]);
    assert.equal(recent.stdout.trim().split('\n').length, 3);
    const future = tapgateAsRoot(['audit', '--json', '--since', new Date(Date.now() + 3_600_000).toISOString(), '--file', daemon.auditLog]);
    assert.equal(future.status, 0);
    assert.equal(future.stdout, '');

    const badSince = tapgateAsRoot(['audit', '--since', 'yesterday', '--file', daemon.auditLog]);
    assert.equal(badSince.status, 1);
    assert.match(badSince.stderr, /invalid --since "yesterday"/);
  });

  test('tapgate audit finds the log through the policy', async () => {
    const { allowed, daemon } = await setUp();
    assert.equal(run(allowed, daemon.socket, 'lab').status, 0);
    const viaConfig = tapgateAsRoot(['audit', '--json', '--config', daemon.config]);
    assert.equal(viaConfig.status, 0, viaConfig.stderr);
    assert.equal(viaConfig.stdout.trim().split('\n')[0].includes('"decision":"granted"'), true);

    // A line that is not a record is skipped and counted, never fatal.
    writeFileSync(daemon.auditLog, 'not json\n', { flag: 'a' });
    const withJunk = tapgateAsRoot(['audit', '--config', daemon.config]);
    assert.equal(withJunk.status, 0);
    assert.match(withJunk.stderr, /skipped 1 lines? .* not audit records \(first at line \d+\)/);
  });

  test('tapgate audit as non-root explains permissions', async () => {
    const { allowed, daemon } = await setUp();
    assert.equal(run(allowed, daemon.socket, 'lab').status, 0);
    const result = runAs(allowed, process.execPath, [tapgateScript(), 'audit', '--file', daemon.auditLog]);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /permission denied/);
    assert.match(result.stderr, /sudo tapgate audit/);
  });
});

// What a real daemon reports about its policy: load warnings in `tapgate status` and in the
// reload reply, and a failed reload in `tapgate status` and `tapgate doctor`. Also the hint for a
// user whose session lacks a group that the group database lists them in.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { privilegedSkipReason, tapgateScript } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { addToGroup, createGroup, createUser, removeGroup, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { waitForOutput } from '../support/wait.js';

const skip = privilegedSkipReason();

function tapgateAsRoot(args: string[], socket: string) {
  return spawnSync(process.execPath, [tapgateScript(), ...args], { encoding: 'utf8', env: { ...process.env, TAPGATE_SOCKET: socket }, timeout: 30_000 });
}

interface StatusPolicy {
  valid: boolean;
  loadedAt: string | null;
  warnings: string[];
  lastReloadFailure: { at: string; error: string } | null;
}

function statusPolicy(socket: string): StatusPolicy {
  const result = tapgateAsRoot(['status', '--json'], socket);
  assert.equal(result.status, 0, result.stderr);
  return (JSON.parse(result.stdout) as { policy: StatusPolicy }).policy;
}

describe('policy status', { skip }, () => {
  let namespace: Namespace;
  let user: TestUser;
  let daemon: DaemonHandle;

  /** The rule at line 3 names a user NSS does not know; network "gone" (line 6) has no bridge. */
  const policy = (name: string): string => `[networks.lab]
bridge = "br-lab"
[[allow]]
users = ["${name}", "tgnosuchuser"]
networks = ["lab"]
`;
  const withMissingBridge = (name: string): string => `${policy(name)}[networks.gone]\nbridge = "br-gone"\n`;

  before(async () => {
    namespace = new Namespace('tgpstat');
    namespace.addBridge('br-lab');
    user = createUser();
    daemon = await startDaemon(namespace, withMissingBridge(user.name));
  });

  after(async () => {
    await daemon?.stop();
    namespace?.destroy();
    if (user) removeUser(user);
  });

  test('load warnings reach log and status', async () => {
    await waitForOutput(daemon, '"Policy loaded"');
    const loaded = daemon.output().split('\n').find((line) => line.includes('"Policy loaded"'))!;
    assert.ok(loaded.includes(`${daemon.config}:3: user \\"tgnosuchuser\\"`), loaded);
    assert.ok(loaded.includes(`${daemon.config}:6: bridge br-gone of network \\"gone\\" does not exist`), loaded);

    const status = tapgateAsRoot(['status'], daemon.socket);
    assert.equal(status.status, 0, status.stdout + status.stderr);
    assert.ok(status.stdout.includes(`  warning: ${daemon.config}:3: user "tgnosuchuser" is not in the user database`), status.stdout);
    assert.ok(status.stdout.includes(`  warning: ${daemon.config}:6: bridge br-gone of network "gone" does not exist`), status.stdout);
  });

  test('bridge warning clears once bridge exists', () => {
    namespace.addBridge('br-gone');
    const warnings = statusPolicy(daemon.socket).warnings;
    assert.equal(warnings.some((warning) => warning.includes('br-gone')), false, warnings.join('\n'));
    assert.equal(warnings.some((warning) => warning.includes('tgnosuchuser')), true, warnings.join('\n'));
  });

  test('reload reply prints warnings', () => {
    daemon.writePolicy(policy(user.name));
    const reload = tapgateAsRoot(['policy', 'reload'], daemon.socket);
    assert.equal(reload.status, 0, reload.stderr);
    assert.ok(reload.stderr.includes(`warning: ${daemon.config}:3: user "tgnosuchuser"`), reload.stderr);
  });

  test('failed reload shows in status and doctor', () => {
    const loadedAt = statusPolicy(daemon.socket).loadedAt;
    assert.ok(loadedAt, 'a valid policy has a load time');

    daemon.writePolicy(`${policy(user.name)}colour = "blue"\n`);
    const reload = tapgateAsRoot(['policy', 'reload'], daemon.socket);
    assert.equal(reload.status, 1, reload.stdout);

    const json = statusPolicy(daemon.socket);
    assert.equal(json.valid, true);
    assert.equal(json.loadedAt, loadedAt);
    assert.ok(json.lastReloadFailure, 'status reports the failed reload');
    assert.ok(json.lastReloadFailure.error.includes(`${daemon.config}:3: unknown key "colour"`), json.lastReloadFailure.error);

    const status = tapgateAsRoot(['status'], daemon.socket);
    assert.equal(status.status, 1, status.stdout);
    const line = status.stdout.split('\n').find((text) => text.startsWith('policy:'))!;
    assert.ok(line.startsWith(`policy:   ${daemon.config} valid, loaded at ${loadedAt}; last reload at ${json.lastReloadFailure.at} FAILED: `), line);
    assert.ok(line.endsWith(`; the policy loaded at ${loadedAt} stays in force`), line);

    const doctor = runAs(user, process.execPath, [tapgateScript(), 'doctor', '--json'], { env: { TAPGATE_SOCKET: daemon.socket } });
    const report = JSON.parse(doctor.stdout) as { findings: { check: string; severity: string; message: string }[] };
    const finding = report.findings.find((item) => item.message.startsWith('The last reload'));
    assert.ok(finding, doctor.stdout);
    assert.equal(finding.severity, 'warning');
    assert.match(finding.message, /failed, so the policy loaded at .* stays in force: .*unknown key "colour"/);
  });

  test('valid reload clears failure', () => {
    daemon.writePolicy(policy(user.name));
    assert.equal(tapgateAsRoot(['policy', 'reload'], daemon.socket).status, 0);
    const json = statusPolicy(daemon.socket);
    assert.equal(json.lastReloadFailure, null);
    const status = tapgateAsRoot(['status'], daemon.socket);
    assert.equal(status.status, 0, status.stdout);
    assert.doesNotMatch(status.stdout, /FAILED/);
  });
});

describe('stale group hint', { skip }, () => {
  let namespace: Namespace;
  let user: TestUser;
  let group: { name: string; gid: number };
  let daemon: DaemonHandle;

  before(async () => {
    namespace = new Namespace('tgstale');
    namespace.addBridge('br-lab');
    user = createUser();
    group = createGroup();
    addToGroup(user, group.name);
    daemon = await startDaemon(namespace, `[daemon]\naudit_log = "AUDIT_LOG"\n[networks.lab]\nbridge = "br-lab"\n[[allow]]\ngroups = ["${group.name}"]\nnetworks = ["lab"]\n`);
  });

  after(async () => {
    await daemon?.stop();
    namespace?.destroy();
    if (user) removeUser(user);
    if (group) removeGroup(group.name);
  });

  /** Requests a tap as the user, with `groups` as the session's supplementary groups. */
  function requestWithGroups(groups: 'login' | 'none') {
    const credentials = groups === 'login' ? ['--init-groups'] : ['--clear-groups'];
    const command = [`--reuid=${user.uid}`, `--regid=${user.gid}`, ...credentials, '--reset-env', '--',
      'env', `TAPGATE_SOCKET=${daemon.socket}`, process.execPath, tapgateScript(), 'run', '--dry-run', '--network', 'lab', '--', 'qemu-system-x86_64'];
    return spawnSync('setpriv', command, { encoding: 'utf8', timeout: 30_000 });
  }

  test('session without group gets hint', () => {
    const denied = requestWithGroups('none');
    assert.equal(denied.status, 1, denied.stdout);
    assert.ok(denied.stderr.includes(`no allow rule in ${daemon.config} matches`), denied.stderr);
    assert.ok(denied.stderr.includes(
      `user ${user.name} is in group ${group.name} according to the user database, but this session is not; log in again (or run "newgrp ${group.name}") to use it`), denied.stderr);
  });

  test('session with group is allowed', () => {
    const allowed = requestWithGroups('login');
    assert.equal(allowed.status, 0, allowed.stderr);
  });

  test('hint appears in audit reason', () => {
    const denials = daemon.audit().filter((record) => record.decision === 'denied');
    assert.equal(denials.length, 1);
    assert.match(String(denials[0]!.reason), /according to the user database, but this session is not/);
  });
});

// `tapgate check` against a real daemon: the decision, the deciding rule as FILE:LINE, limits
// and usage, for the caller or (root only) for another user, with groups from the user database.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { privilegedSkipReason, tapgateScript, userReadableRoot } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { addToGroup, createGroup, createUser, removeGroup, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';

const skip = privilegedSkipReason();

function checkAsRoot(args: string[], socket: string) {
  return spawnSync(process.execPath, [tapgateScript(), 'check', ...args], { encoding: 'utf8', env: { ...process.env, TAPGATE_SOCKET: socket }, timeout: 30_000 });
}

describe('tapgate check', { skip }, () => {
  let namespace: Namespace;
  let member: TestUser;
  let outsider: TestUser;
  let banned: TestUser;
  let group: { name: string; gid: number };
  let daemon: DaemonHandle;

  beforeEach(async () => {
    namespace = new Namespace('tgcheck');
    namespace.addBridge('br-lab');
    member = createUser();
    outsider = createUser();
    banned = createUser();
    group = createGroup();
    addToGroup(member, group.name);
    addToGroup(banned, group.name);
    // Line numbers matter: the deny rule starts at line 4, the allow rule at line 7.
    daemon = await startDaemon(namespace, `
[networks.lab]
bridge = "br-lab"
[[deny]]
users = ["${banned.uid}"]
networks = ["*"]
[[allow]]
name = "lab group"
groups = ["${group.name}"]
networks = ["lab"]
max_taps = 3
max_queues = 4
vhost = true
`);
  });

  afterEach(async () => {
    await daemon.stop();
    namespace.destroy();
    for (const user of [member, outsider, banned]) removeUser(user);
    removeGroup(group.name);
  });

  test('root explains a supplementary group allow', () => {
    const result = checkAsRoot(['--user', member.name, '--network', 'lab'], daemon.socket);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^decision: allowed$/m);
    assert.match(result.stdout, new RegExp(`^user: +user ${member.name} \\(uid ${member.uid}\\)$`, 'm'));
    assert.match(result.stdout, /^network: +lab \(bridge br-lab\)$/m);
    assert.ok(result.stdout.includes(`rule:     allow rule "lab group" at ${daemon.config}:7`), result.stdout);
    assert.match(result.stdout, /^limits: +max_taps 3, max_queues 4, vhost yes, unfiltered no$/m);
    assert.match(result.stdout, /^usage: +0 of 3 taps in use$/m);
  });

  test('root explains deny and default deny', () => {
    const denied = checkAsRoot(['--user', String(banned.uid), '--network', 'br-lab'], daemon.socket);
    assert.equal(denied.status, 1);
    assert.match(denied.stdout, /^decision: denied$/m);
    assert.ok(denied.stdout.includes(`rule:     deny rule at ${daemon.config}:4`), denied.stdout);

    const nobody = checkAsRoot(['--user', outsider.name, '--network', 'lab'], daemon.socket);
    assert.equal(nobody.status, 1);
    assert.match(nobody.stdout, /^rule: +none matches, so the default deny applies$/m);
    assert.match(nobody.stdout, /no allow rule/);

    const unknownUser = checkAsRoot(['--user', 'tgnosuchuser', '--network', 'lab'], daemon.socket);
    assert.equal(unknownUser.status, 1);
    assert.match(unknownUser.stderr, /User "tgnosuchuser" not found/);
  });

  test('users check themselves only', () => {
    const own = runAs(member, process.execPath, [tapgateScript(), 'check', '--network', 'lab'], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(own.status, 0, own.stderr);
    assert.match(own.stdout, new RegExp(`user ${member.name} `));

    const other = runAs(member, process.execPath, [tapgateScript(), 'check', '--user', outsider.name, '--network', 'lab'], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(other.status, 1);
    assert.match(other.stderr, /only root may check another user's access/);

    // The daemon enforces it too: a client that sends "user" gets an error, not the decision.
    const client = join(userReadableRoot(), 'dist', 'src', 'client', 'client.js');
    const direct = runAs(outsider, process.execPath, ['--input-type=module', '-e',
      `import { call } from ${JSON.stringify(client)}; console.log(JSON.stringify(call({ op: 'check', network: 'lab', user: ${JSON.stringify(member.name)} }).reply));`],
    { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(direct.status, 0, direct.stderr);
    const reply = JSON.parse(direct.stdout) as { ok: boolean; error: { code: string; message: string } };
    assert.equal(reply.ok, false);
    assert.equal(reply.error.code, 'denied');
    assert.match(reply.error.message, /Only root may check another user's access/);
  });

  test('missing bridge makes check fail', () => {
    namespace.ip('link', 'del', 'br-lab');
    const result = checkAsRoot(['--user', member.name, '--network', 'lab'], daemon.socket);
    assert.equal(result.status, 1);
    assert.match(result.stdout, /^decision: allowed$/m);
    assert.match(result.stdout, /^bridge: +Bridge br-lab of network "lab" does not exist/m);
  });
});

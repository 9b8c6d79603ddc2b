// Policy reloads against a real daemon: `tapgate policy reload` (root only) and SIGHUP keep the
// previous policy when the new file is invalid, and a valid file takes effect at once.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { privilegedSkipReason, tapgateScript, userReadableRoot } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { waitForOutput } from '../support/wait.js';

const skip = privilegedSkipReason();

function tapgateAsRoot(args: string[], socket: string) {
  return spawnSync(process.execPath, [tapgateScript(), ...args], { encoding: 'utf8', env: { ...process.env, TAPGATE_SOCKET: socket }, timeout: 30_000 });
}

function policyFor(user: TestUser, networks: string[]): string {
  return `
[networks.one]
bridge = "br-one"
[networks.two]
bridge = "br-two"
[[allow]]
users = ["${user.name}"]
networks = ${JSON.stringify(networks)}
`;
}

/** Valid TOML with two errors, both reported at the rule's line 6: no networks, and an unknown key. */
function brokenPolicy(user: TestUser): string {
  return `
[networks.one]
bridge = "br-one"
[networks.two]
bridge = "br-two"
[[allow]]
users = ["${user.name}"]
colour = "blue"
`;
}

describe('policy reload', { skip }, () => {
  let namespace: Namespace;
  let user: TestUser;
  let daemon: DaemonHandle;

  beforeEach(async () => {
    namespace = new Namespace('tgreload');
    namespace.addBridge('br-one');
    namespace.addBridge('br-two');
    user = createUser();
    daemon = await startDaemon(namespace, policyFor(user, ['one']));
  });

  afterEach(async () => {
    await daemon.stop();
    namespace.destroy();
    removeUser(user);
  });

  function request(network: string) {
    return runAs(user, process.execPath, [tapgateScript(), 'run', '--dry-run', '--network', network, '--', 'qemu-system-x86_64'], { env: { TAPGATE_SOCKET: daemon.socket } });
  }

  test('reload command keeps old policy on errors', async () => {
    daemon.writePolicy(brokenPolicy(user));
    const reload = tapgateAsRoot(['policy', 'reload'], daemon.socket);
    assert.equal(reload.status, 1);
    assert.match(reload.stderr, /previous one stays in force/);
    assert.ok(reload.stderr.includes(`${daemon.config}:6: [[allow]] needs networks`), reload.stderr);
    assert.ok(reload.stderr.includes(`${daemon.config}:6: unknown key "colour"`), reload.stderr);
    // The test process was blocked in spawnSync, so the daemon's log may not be read in yet.
    await waitForOutput(daemon, '"Policy reload failed; the previous policy stays in force"');
    assert.ok(daemon.output().includes(`${daemon.config}:6: unknown key`));

    const allowedBefore = request('one');
    assert.equal(allowedBefore.status, 0, allowedBefore.stderr);
  });

  test('SIGHUP keeps old policy on errors', async () => {
    daemon.writePolicy(brokenPolicy(user));
    daemon.process.kill('SIGHUP');
    await waitForOutput(daemon, '"Policy reload failed; the previous policy stays in force"');
    assert.ok(daemon.output().includes(`${daemon.config}:6: [[allow]] needs networks`));
    const stillAllowed = request('one');
    assert.equal(stillAllowed.status, 0, stillAllowed.stderr);
  });

  test('valid reload applies to next request', async () => {
    assert.equal(request('two').status, 1);
    daemon.writePolicy(policyFor(user, ['two']));
    const reload = tapgateAsRoot(['policy', 'reload'], daemon.socket);
    assert.equal(reload.status, 0, reload.stderr);
    assert.match(reload.stdout, /reloaded .*tapgate\.toml: 2 networks, 1 rules/);
    const nowAllowed = request('two');
    assert.equal(nowAllowed.status, 0, nowAllowed.stderr);
    const nowDenied = request('one');
    assert.equal(nowDenied.status, 1);
    assert.match(nowDenied.stderr, /no allow rule/);

    // SIGHUP reaches the same result.
    daemon.writePolicy(policyFor(user, ['one']));
    daemon.process.kill('SIGHUP');
    await waitForOutput(daemon, '"Policy reloaded"');
    assert.equal(request('one').status, 0);
  });

  test('reload is refused to non-root users', () => {
    const cli = runAs(user, process.execPath, [tapgateScript(), 'policy', 'reload'], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(cli.status, 1);
    assert.match(cli.stderr, /only root may reload/);

    // The daemon enforces it too, whatever client sends the request.
    const client = join(userReadableRoot(), 'dist', 'src', 'client', 'client.js');
    const direct = runAs(user, process.execPath, ['--input-type=module', '-e',
      `import { call } from ${JSON.stringify(client)}; console.log(JSON.stringify(call({ op: 'reload' }).reply));`], { env: { TAPGATE_SOCKET: daemon.socket } });
    assert.equal(direct.status, 0, direct.stderr);
    const reply = JSON.parse(direct.stdout) as { ok: boolean; error: { code: string; message: string } };
    assert.equal(reply.ok, false);
    assert.equal(reply.error.code, 'denied');
    assert.match(reply.error.message, /Only root may reload the policy/);
    assert.doesNotMatch(daemon.output(), /"Policy reload requested"/);
  });
});

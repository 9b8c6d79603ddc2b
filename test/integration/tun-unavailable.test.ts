// A daemon that cannot open /dev/net/tun: the request fails with the device path, the errno
// and a hint, leaves nothing behind, and succeeds once the device is back, without a restart.
// The daemon runs in a private mount namespace whose /dev/net is a tmpfs the test controls.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { privilegedSkipReason } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { probe } from '../support/probe.js';
import { call } from '../../src/client/client.js';

/** A misc-device minor with no driver behind it, so opening the node fails with ENODEV. */
const UNUSED_MISC_MINOR = '250';
const TUN_MINOR = '200';

function wrapper(mountOptions: string, minor: string): string[] {
  const script = `mount -t tmpfs -o ${mountOptions} none /dev/net && mknod -m 0666 /dev/net/tun c 10 ${minor} && exec "$@"`;
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh'];
}

function replaceTunNode(daemon: DaemonHandle, minor: string): void {
  execFileSync('nsenter', ['-t', String(daemon.process.pid), '-m', '--', 'sh', '-c', `rm -f /dev/net/tun && mknod -m 0666 /dev/net/tun c 10 ${minor}`]);
}

const policy = (user: TestUser) => `
[networks.lab]
bridge = "brtun"

[[allow]]
users = ["${user.name}"]
networks = ["lab"]
max_taps = 1
`;

describe('tun unavailable to the daemon', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let user: TestUser;

  before(() => {
    ns = new Namespace('tg-tun');
    ns.addBridge('brtun');
    user = createUser();
  });

  after(() => {
    ns?.destroy();
    if (user) removeUser(user);
  });

  test('missing tun driver is named and recovers without restart', async () => {
    const daemon = await startDaemon(ns, policy(user), { wrapper: wrapper('mode=0755', UNUSED_MISC_MINOR) });
    try {
      const status = call({ op: 'status' }, daemon.socket).reply as unknown as { tun: { ok: boolean; problem: string } };
      assert.equal(status.tun.ok, false);
      assert.match(status.tun.problem, /\/dev\/net\/tun/);

      const failed = probe(user, daemon.socket, ['lab']);
      assert.equal(failed.ok, false);
      assert.match(failed.error!, /\/dev\/net\/tun/);
      assert.match(failed.error!, /ENODEV/);
      assert.match(failed.error!, /tun module not available/);
      assert.deepEqual(ns.ports('brtun'), []);

      replaceTunNode(daemon, TUN_MINOR);
      // The quota is 1: a slot leaked by the failure would make this request fail.
      const granted = probe(user, daemon.socket, ['lab']);
      assert.equal(granted.ok, true, granted.error);
    } finally {
      await daemon.stop();
    }
  });

  test('sandboxed tun access is reported as a security block', async () => {
    const daemon = await startDaemon(ns, policy(user), { wrapper: wrapper('mode=0755,nodev', TUN_MINOR) });
    try {
      const failed = probe(user, daemon.socket, ['lab']);
      assert.equal(failed.ok, false);
      assert.match(failed.error!, /\/dev\/net\/tun/);
      assert.match(failed.error!, /EACCES/);
      assert.match(failed.error!, /blocked by security policy or sandbox/);
      assert.deepEqual(ns.ports('brtun'), []);
      assert.equal(daemon.process.exitCode, null, 'the daemon keeps running');
    } finally {
      await daemon.stop();
    }
  });
});

// A real QEMU guest, started by an unprivileged user, pings its bridge through a tapgate tap:
// once through `tapgate run` and once through QEMU's own `-netdev bridge,helper=` path.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { privilegedSkipReason, tapgateScript, userReadableRoot } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { asUser, createUser, removeUser, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { guestPaths, guestQemuArgs, parseGuestReport } from '../support/guest.js';

const BOOT_TIMEOUT_MS = 180_000;

function guestSkipReason(): string | undefined {
  const reason = privilegedSkipReason();
  if (reason) return reason;
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) return 'needs qemu-system-x86_64';
  return undefined;
}

/** Runs a command as `user` in a private mount namespace where /dev/net is empty. */
function runWithoutTun(user: TestUser, env: Record<string, string>, command: string[]) {
  const inner = [...asUser(user), 'env', ...Object.entries(env).map(([key, value]) => `${key}=${value}`), ...command];
  const script = 'mount -t tmpfs -o mode=0755 none /dev/net && exec "$@"';
  return spawnSync('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', ...inner], {
    encoding: 'utf8', timeout: BOOT_TIMEOUT_MS,
  });
}

describe('guest networking', { skip: guestSkipReason() }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let user: TestUser;

  before(async () => {
    ns = new Namespace('tg-e2e');
    ns.addBridge('brvm', { cidr: '10.201.0.1/24' });
    user = createUser();
    daemon = await startDaemon(ns, `
[networks.vm]
bridge = "brvm"

[[allow]]
users = ["${user.name}"]
networks = ["vm"]
`);
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
  });

  test('guest pings the bridge through tapgate run', async () => {
    const guest = guestPaths(userReadableRoot());
    const qemu = ['qemu-system-x86_64', ...guestQemuArgs({ ...guest, append: ['tg.ip=10.201.0.2/24', 'tg.ping=10.201.0.1'] })];
    // /dev/net/tun is hidden from the user: only the daemon opens it.
    const result = runWithoutTun(user, { TAPGATE_SOCKET: daemon.socket }, [process.execPath, tapgateScript(), 'run', '--network', 'vm', '--', ...qemu]);
    const report = parseGuestReport(result.stdout);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(report.done, true, result.stdout);
    assert.equal(report.ping?.ok, true, result.stdout);
    const mac = /guest MAC ([0-9a-f:]{17})/.exec(result.stderr)?.[1];
    assert.equal(report.mac, mac, 'the guest NIC uses the MAC the daemon assigned');
    assert.doesNotMatch(result.stderr, /could not open \/dev\/net\/tun|Operation not permitted/);
  });

  test('guest pings the bridge through the QEMU helper path', async () => {
    const root = userReadableRoot();
    const guest = guestPaths(root);
    const helper = join(root, 'bin', 'tapgate-helper');
    const qemu = [
      'qemu-system-x86_64', ...guestQemuArgs({ ...guest, append: ['tg.ip=10.201.0.3/24', 'tg.ping=10.201.0.1'] }),
      '-netdev', `bridge,id=n0,br=brvm,helper=${helper}`, '-device', 'virtio-net-pci,netdev=n0',
    ];
    const result = runWithoutTun(user, { TAPGATE_SOCKET: daemon.socket }, qemu);
    const report = parseGuestReport(result.stdout);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(report.ping?.ok, true, result.stdout);
    assert.doesNotMatch(result.stderr, /Operation not permitted/);

    // QEMU has exited, so its tap must be gone from the bridge.
    await sleep(200);
    assert.deepEqual(ns.ports('brvm'), []);
  });

  test('QEMU fails fast when the daemon is unreachable', () => {
    const root = userReadableRoot();
    const guest = guestPaths(root);
    const missing = join(daemon.directory, 'missing.sock');
    const started = Date.now();
    const result = runWithoutTun(user, { TAPGATE_SOCKET: missing }, [
      'qemu-system-x86_64', ...guestQemuArgs({ ...guest, append: [] }),
      '-netdev', `bridge,id=n0,br=brvm,helper=${join(root, 'bin', 'tapgate-helper')}`, '-device', 'virtio-net-pci,netdev=n0',
    ]);
    assert.notEqual(result.status, 0);
    assert.ok(Date.now() - started < 10_000, 'QEMU gave up within 10 s');
    assert.match(result.stderr, new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*not found`));
  });
});

// What a descriptor holder can do to a tap without capabilities, and how the daemon undoes it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSkipReason } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { holdTap } from '../support/probe.js';
import { waitUntil } from '../support/wait.js';

describe('tap guard', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let user: TestUser;

  before(async () => {
    ns = new Namespace('tg-guard');
    ns.addBridge('brguard', { address: '02:00:00:00:00:01' });
    user = createUser();
    daemon = await startDaemon(ns, `[daemon]\naudit_log = "AUDIT_LOG"\n\n[networks.guard]\nbridge = "brguard"\n\n[[allow]]\nusers = ["${user.name}"]\nnetworks = ["guard"]\n`);
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
  });

  for (const how of ['persist', 'owner']) {
    test(`tap made ${how === 'persist' ? 'persistent' : 'owned'} is revoked`, async () => {
      const held = await holdTap(user, daemon.socket, ['guard', '--tamper', how]);
      try {
        const name = held.report.grant!.name;
        assert.equal(held.report.tamperResult, 0, 'the kernel let the holder do it');
        assert.equal(await waitUntil(() => !ns.links().includes(name), 2000), true, `${name} still exists`);
        const record = daemon.audit().find((entry) => entry.event === 'lease-end' && entry.tap === name);
        assert.match(String(record?.reason), /^revoked: /);
      } finally {
        await held.release();
      }
    });
  }

  test('changed host MAC is restored', async () => {
    const held = await holdTap(user, daemon.socket, ['guard', '--tamper', 'mac']);
    try {
      const name = held.report.grant!.name;
      assert.equal(held.report.tamperResult, 0);
      const address = () => ns.ipJson<{ address: string }[]>('link', 'show', name)[0].address;
      assert.equal(await waitUntil(() => address() === 'fe:ff:ff:ff:ff:ff', 2000), true, `address is ${address()}`);
      assert.equal(ns.ipJson<{ address: string }[]>('link', 'show', 'brguard')[0].address, '02:00:00:00:00:01');
    } finally {
      await held.release();
    }
  });

  test('re-created bridge gets its taps back', async () => {
    const held = await holdTap(user, daemon.socket, ['guard']);
    try {
      const name = held.report.grant!.name;
      ns.ip('link', 'del', 'brguard');
      ns.addBridge('brguard', { address: '02:00:00:00:00:01' });
      assert.equal(await waitUntil(() => ns.ports('brguard').includes(name), 2000), true, 'tap attached again');
      const tap = ns.ipJson<{ operstate: string; flags: string[] }[]>('link', 'show', name)[0];
      assert.ok(tap.flags.includes('UP'));
      assert.equal(await waitUntil(() => daemon.output().includes('Bridge re-created; its taps are attached again'), 2000), true, 'the daemon logged it');
    } finally {
      await held.release();
    }
  });
});

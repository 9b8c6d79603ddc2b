// The open-tap path end to end in a namespace: real taps on real bridges, requested by
// unprivileged users through the client library.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { privilegedSkipReason } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { holdTap, probe } from '../support/probe.js';
import { call } from '../../src/client/client.js';
import { waitUntil } from '../support/wait.js';

const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_MULTI_QUEUE = 0x0100;
const IFF_VNET_HDR = 0x4000;

const policy = (alice: TestUser) => `
[daemon]
audit_log = "AUDIT_LOG"

[networks.lab]
bridge = "brlab"

[networks.jumbo]
bridge = "brjumbo"

[networks.small]
bridge = "brsmall"

[networks.huge]
bridge = "brhuge"

[[allow]]
name = "lab users"
users = ["${alice.name}"]
networks = ["lab", "jumbo", "small", "huge"]
max_taps = 8
max_queues = 4
`;

describe('open-tap', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let alice: TestUser;
  let bob: TestUser;

  before(async () => {
    ns = new Namespace('tg-grant');
    ns.addBridge('brlab', { cidr: '10.200.0.1/24' });
    ns.ip('link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'uplink1');
    ns.ip('link', 'set', 'uplink0', 'master', 'brlab', 'up');
    ns.addBridge('brjumbo');
    ns.ip('link', 'add', 'jumbo0', 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'jumbo1', 'mtu', '9000');
    ns.ip('link', 'set', 'jumbo0', 'master', 'brjumbo', 'up');
    ns.addBridge('brsmall', { mtu: 1400 });
    ns.addBridge('brhuge', { mtu: 65535 });
    alice = createUser();
    bob = createUser();
    daemon = await startDaemon(ns, policy(alice));
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (alice) removeUser(alice);
    if (bob) removeUser(bob);
  });

  test('unprivileged user receives a working tap', () => {
    const report = probe(alice, daemon.socket, ['lab', '--arp', '10.200.0.2', '10.200.0.1']);
    assert.equal(report.ok, true, report.error);
    assert.equal(report.infos![0].name, report.grant!.name);
    assert.equal(report.infos![0].flags & (IFF_TAP | IFF_NO_PI), IFF_TAP | IFF_NO_PI);
    assert.equal(report.arpReply, true, 'the bridge answered an ARP request written to the tap');
  });

  test('tap joins the bridge with its MTU', async () => {
    const jumboBefore = ns.ipJson<{ mtu: number }[]>('link', 'show', 'brjumbo')[0].mtu;
    const jumbo = await holdTap(alice, daemon.socket, ['jumbo']);
    const small = await holdTap(alice, daemon.socket, ['small']);
    try {
      assert.equal(jumboBefore, 9000);
      const jumboTap = ns.ipJson<{ mtu: number; master: string }[]>('link', 'show', jumbo.report.grant!.name)[0];
      assert.equal(jumboTap.master, 'brjumbo');
      assert.equal(jumboTap.mtu, 9000);
      assert.equal(ns.ipJson<{ mtu: number }[]>('link', 'show', 'brjumbo')[0].mtu, 9000, 'bridge MTU unchanged');
      const smallTap = ns.ipJson<{ mtu: number; master: string }[]>('link', 'show', small.report.grant!.name)[0];
      assert.equal(smallTap.master, 'brsmall');
      assert.equal(smallTap.mtu, 1400);
      assert.equal(jumbo.report.grant!.mtu, 9000);
    } finally {
      await jumbo.release();
      await small.release();
    }
  });

  test('MTU the tap cannot take fails cleanly', () => {
    const linksBefore = ns.links();
    const report = probe(alice, daemon.socket, ['huge']);
    assert.equal(report.ok, false);
    assert.match(report.error!, /tap tg[0-9a-f]{8}/);
    assert.match(report.error!, /MTU 65535 of bridge brhuge/);
    assert.match(report.error!, /tap MTU is 1500/);
    assert.deepEqual(ns.links(), linksBefore, 'the tap was removed');
    assert.equal(ns.ipJson<{ mtu: number }[]>('link', 'show', 'brhuge')[0].mtu, 65535);
  });

  test('bridge keeps its MAC address', async () => {
    const before = ns.ipJson<{ address: string }[]>('link', 'show', 'brlab')[0].address;
    const held = await holdTap(alice, daemon.socket, ['lab']);
    try {
      assert.equal(ns.ipJson<{ address: string }[]>('link', 'show', 'brlab')[0].address, before);
      assert.deepEqual(ns.ports('brlab'), [held.report.grant!.name, 'uplink0'].sort());
    } finally {
      await held.release();
    }
  });

  test('tap disappears when the client closes it', async () => {
    const held = await holdTap(alice, daemon.socket, ['lab']);
    const name = held.report.grant!.name;
    assert.ok(ns.links().includes(name));
    await held.release();
    assert.equal(await waitUntil(() => !ns.links().includes(name), 2000), true, `${name} still exists`);
  });

  test('user without a rule is refused', () => {
    const linksBefore = ns.links();
    const report = probe(bob, daemon.socket, ['lab']);
    assert.equal(report.ok, false);
    assert.match(report.error!, /network "lab"/);
    assert.match(report.error!, /denied/);
    assert.match(report.error!, new RegExp(`user ${bob.name}`));
    assert.match(report.error!, /\[\[allow\]\] rule/);
    assert.deepEqual(ns.links(), linksBefore);
    const record = daemon.audit().at(-1)!;
    assert.equal(record.decision, 'denied');
    assert.equal(record.uid, bob.uid);
  });

  test('invalid bridge names are refused before device work', () => {
    const linksBefore = ns.links();
    const cases: [string, RegExp][] = [
      ['brlab0123456789X', /too long: 16 bytes/],
      ['br lab', /whitespace/],
      ['br/lab', /"\/"/],
      ['..', /"\."/],
      ['nosuchbr', /neither a network nor a network's bridge/],
    ];
    for (const [name, expected] of cases) {
      const { reply, fds } = call({ op: 'open-tap', network: name, queues: 1, vnetHdr: false }, daemon.socket);
      assert.equal(fds.length, 0, name);
      assert.equal(reply.ok, false, name);
      assert.match((reply as { error: { message: string } }).error.message, expected, name);
    }
    assert.deepEqual(ns.links(), linksBefore);
  });

  test('queues give one fd each on one multi-queue tap', () => {
    const four = probe(alice, daemon.socket, ['lab', '--queues', '4']);
    assert.equal(four.ok, true, four.error);
    assert.equal(four.infos!.length, 4);
    assert.equal(new Set(four.infos!.map((info) => info.name)).size, 1);
    assert.ok(four.infos!.every((info) => info.flags & IFF_MULTI_QUEUE));

    const one = probe(alice, daemon.socket, ['lab']);
    assert.equal(one.infos!.length, 1);
    assert.equal(one.infos![0].flags & IFF_MULTI_QUEUE, 0);

    const linksBefore = ns.links();
    const tooMany = probe(alice, daemon.socket, ['lab', '--queues', '5']);
    assert.equal(tooMany.ok, false);
    assert.match(tooMany.error!, /Requested 5 queues, but the maximum .* is 4/);
    assert.deepEqual(ns.links(), linksBefore);
  });

  test('vnet header only when requested', () => {
    const withHeader = probe(alice, daemon.socket, ['lab', '--vnet']);
    assert.ok(withHeader.infos![0].flags & IFF_VNET_HDR);
    assert.equal(withHeader.grant!.vnetHdr, true);
    const without = probe(alice, daemon.socket, ['lab']);
    assert.equal(without.infos![0].flags & IFF_VNET_HDR, 0);
  });

  test('granted tap is recorded on the link and in the audit log', async () => {
    const held = await holdTap(alice, daemon.socket, ['lab']);
    try {
      const grant = held.report.grant!;
      const link = ns.ipJson<{ ifalias: string; address: string }[]>('link', 'show', grant.name)[0];
      assert.equal(link.ifalias, `tapgate uid=${alice.uid} network=lab lease=${grant.lease} mac=${grant.mac} queues=1`);
      assert.equal(link.address, 'fe:ff:ff:ff:ff:ff');
      const record = daemon.audit().find((entry) => entry.tap === grant.name)!;
      assert.equal(record.decision, 'granted');
      assert.equal(record.user, alice.name);
      assert.match(String(record.rule), /allow rule "lab users" at .*tapgate\.toml:\d+/);
      assert.equal(record.mac, grant.mac);
      assert.ok(readFileSync(daemon.auditLog, 'utf8').endsWith('\n'));
    } finally {
      await held.release();
    }
  });
});

// The rtnetlink codec checked against `ip -json -d link show` on the same links.
//
// An rtnetlink socket acts on the network namespace of the process that opened it, so each
// RtnlSocket call runs in a child node process started with `ip netns exec` inside the test's
// namespace; the child prints its result as JSON.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Namespace } from '../support/netns.js';
import { REPO_ROOT, privilegedSkipReason } from '../support/env.js';
import type { Link } from '../../src/sys/rtnl.js';

const skip = privilegedSkipReason();
const RTNL_MODULE = pathToFileURL(join(REPO_ROOT, 'dist', 'src', 'sys', 'rtnl.js')).href;

const BRIDGE = 'tgobr0';
const BRIDGE_MAC = '02:11:22:33:44:55';
const PORT = 'tgoveth0';
const PEER = 'tgoveth1';
const TAP = 'tgotap0';
const TAP_ALIAS = 'tapgate oracle tap';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  master?: string;
  operstate: string;
  flags: string[];
  ifalias?: string;
  min_mtu?: number;
  max_mtu?: number;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
}

interface ChildResult {
  value?: unknown;
  thrown?: { name: string; message: string; code: string };
}

/**
 * Runs `body` (the inside of an async function with `socket`, an open RtnlSocket) in a node
 * process inside `namespace`, and returns what it returned or threw.
 */
function runInNamespace(namespace: Namespace, body: string): ChildResult {
  const script = [
    `import { RtnlSocket } from ${JSON.stringify(RTNL_MODULE)};`,
    'const socket = new RtnlSocket();',
    'let result;',
    `try { result = { value: await (async () => { ${body} })() ?? null }; }`,
    'catch (error) { result = { thrown: { name: error.name, message: error.message, code: error.code } }; }',
    'finally { socket.close(); }',
    'process.stdout.write(JSON.stringify(result));',
  ].join('\n');
  const run = namespace.exec(process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(run.status, 0, `child node process failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as ChildResult;
}

/** Runs `body` in `namespace` and returns its JSON value. Fails the test when it throws. */
function rtnlValue<T>(namespace: Namespace, body: string): T {
  const result = runInNamespace(namespace, body);
  assert.equal(result.thrown, undefined, `${body} threw ${JSON.stringify(result.thrown)}`);
  return result.value as T;
}

/** Runs `body` in `namespace` and returns what it threw. Fails the test when it returns. */
function rtnlError(namespace: Namespace, body: string): NonNullable<ChildResult['thrown']> {
  const result = runInNamespace(namespace, body);
  assert.ok(result.thrown, `${body} returned ${JSON.stringify(result.value)} instead of throwing`);
  return result.thrown;
}

/** Creates a namespace with a bridge, a veth pair with one end enslaved, and a tap. */
function createTopology(): Namespace {
  const namespace = new Namespace('tg-rtnl');
  try {
    namespace.addBridge(BRIDGE, { mtu: 1400, address: BRIDGE_MAC });
    namespace.ip('link', 'add', PORT, 'type', 'veth', 'peer', 'name', PEER);
    namespace.ip('link', 'set', PORT, 'master', BRIDGE);
    namespace.ip('link', 'set', PORT, 'up');
    namespace.ip('tuntap', 'add', 'dev', TAP, 'mode', 'tap');
    namespace.ip('link', 'set', TAP, 'alias', TAP_ALIAS, 'mtu', '1300');
    return namespace;
  } catch (error) {
    namespace.destroy();
    throw error;
  }
}

function ipLinks(namespace: Namespace): IpLink[] {
  return namespace.ipJson<IpLink[]>('-d', 'link', 'show');
}

/** Keeps the fields the test compares, leaving out counters and timers that change on their own. */
function comparedFields(links: IpLink[]): IpLink[] {
  return links.map((link) => ({
    ifindex: link.ifindex, ifname: link.ifname, mtu: link.mtu, address: link.address, master: link.master,
    operstate: link.operstate, flags: link.flags, ifalias: link.ifalias, min_mtu: link.min_mtu, max_mtu: link.max_mtu,
    linkinfo: { info_kind: link.linkinfo?.info_kind, info_slave_kind: link.linkinfo?.info_slave_kind },
  }));
}

/**
 * Returns ip's view of the links once it stops changing. The kernel's linkwatch updates
 * operstate after a delay of up to a second, so a snapshot taken right after set-up may be
 * overtaken before the codec reads the links. Gives up after three seconds.
 */
async function settledIpLinks(namespace: Namespace): Promise<IpLink[]> {
  let previous = comparedFields(ipLinks(namespace));
  for (let attempt = 0; attempt < 15; attempt++) {
    await sleep(200);
    const current = comparedFields(ipLinks(namespace));
    if (JSON.stringify(current) === JSON.stringify(previous)) return current;
    previous = current;
  }
  assert.fail(`links in ${namespace.name} kept changing for three seconds`);
}

function ipLink(namespace: Namespace, name: string): IpLink {
  const [link] = namespace.ipJson<IpLink[]>('-d', 'link', 'show', 'dev', name);
  assert.ok(link, `ip shows no link ${name}`);
  return link;
}

/** Returns the text of the kernel's extended ack that `ip` prints as "Error: TEXT." */
function ipErrorText(namespace: Namespace, ...args: string[]): string {
  const run = spawnSync('ip', ['-n', namespace.name, ...args], { encoding: 'utf8' });
  assert.notEqual(run.status, 0, `ip ${args.join(' ')} unexpectedly succeeded`);
  const match = /^Error: (.+?)\.?$/m.exec(run.stderr);
  assert.ok(match, `ip printed no extended-ack text: ${run.stderr}`);
  return match[1];
}

test('listLinks matches ip -json -d link show', { skip }, async () => {
  const namespace = createTopology();
  try {
    const expected = await settledIpLinks(namespace);
    const links = rtnlValue<Link[]>(namespace, 'return socket.listLinks();');
    const nameOf = new Map(links.map((link) => [link.index, link.name]));

    assert.deepEqual(links.map((link) => link.index), expected.map((link) => link.ifindex));
    for (const oracle of expected) {
      const link = links.find((candidate) => candidate.index === oracle.ifindex);
      assert.ok(link, `listLinks lacks ifindex ${oracle.ifindex} (${oracle.ifname})`);
      const label = oracle.ifname;
      assert.equal(link.name, oracle.ifname, label);
      assert.equal(link.mtu, oracle.mtu, `${label} mtu`);
      assert.equal(link.address, oracle.address, `${label} address`);
      assert.equal(link.master === undefined ? undefined : nameOf.get(link.master), oracle.master, `${label} master`);
      assert.equal(link.operstate, oracle.operstate, `${label} operstate`);
      assert.equal(link.kind, oracle.linkinfo?.info_kind, `${label} kind`);
      assert.equal(link.slaveKind, oracle.linkinfo?.info_slave_kind, `${label} slave kind`);
      assert.equal(link.alias, oracle.ifalias, `${label} alias`);
      assert.equal(link.minMtu, oracle.min_mtu, `${label} min_mtu`);
      assert.equal(link.maxMtu, oracle.max_mtu, `${label} max_mtu`);
    }
  } finally {
    namespace.destroy();
  }
});

test('listLinks reports the configured topology', { skip }, () => {
  const namespace = createTopology();
  try {
    const links = rtnlValue<Link[]>(namespace, 'return socket.listLinks();');
    const byName = new Map(links.map((link) => [link.name, link]));
    const bridge = byName.get(BRIDGE);
    const port = byName.get(PORT);
    const tap = byName.get(TAP);
    assert.ok(bridge && port && tap, `missing links in ${[...byName.keys()].join(', ')}`);
    assert.equal(bridge.kind, 'bridge');
    assert.equal(bridge.mtu, 1400);
    assert.equal(bridge.address, BRIDGE_MAC);
    assert.equal(port.kind, 'veth');
    assert.equal(port.master, bridge.index);
    assert.equal(port.slaveKind, 'bridge');
    assert.equal(tap.kind, 'tun');
    assert.equal(tap.mtu, 1300);
    assert.equal(tap.alias, TAP_ALIAS);
  } finally {
    namespace.destroy();
  }
});

test('getLinkByName finds a link and misses a name', { skip }, () => {
  const namespace = createTopology();
  try {
    const oracle = ipLink(namespace, TAP);
    const found = rtnlValue<Link>(namespace, `return socket.getLinkByName(${JSON.stringify(TAP)});`);
    assert.equal(found.index, oracle.ifindex);
    assert.equal(found.alias, TAP_ALIAS);
    const missing = rtnlValue<string>(namespace, 'return socket.getLinkByName("tgo-nosuch0") === undefined ? "undefined" : "found";');
    assert.equal(missing, 'undefined');
    const byIndex = rtnlValue<string>(namespace, 'return socket.getLinkByIndex(999999) === undefined ? "undefined" : "found";');
    assert.equal(byIndex, 'undefined');
  } finally {
    namespace.destroy();
  }
});

test('setLink changes what ip reports', { skip }, () => {
  const namespace = createTopology();
  try {
    const bridgeIndex = ipLink(namespace, BRIDGE).ifindex;
    const tapIndex = ipLink(namespace, TAP).ifindex;
    const change = { mtu: 1280, alias: 'tapgate uid=1000 lease=x', master: bridgeIndex, up: true };
    rtnlValue(namespace, `socket.setLink(${tapIndex}, ${JSON.stringify(change)}, "tap ${TAP}");`);

    const after = ipLink(namespace, TAP);
    assert.equal(after.mtu, 1280);
    assert.equal(after.ifalias, change.alias);
    assert.equal(after.master, BRIDGE);
    assert.ok(after.flags.includes('UP'), `flags: ${after.flags.join(',')}`);
    assert.equal(after.linkinfo?.info_slave_kind, 'bridge');

    rtnlValue(namespace, `socket.setLink(${tapIndex}, { up: false }, "tap ${TAP}");`);
    assert.ok(!ipLink(namespace, TAP).flags.includes('UP'));
  } finally {
    namespace.destroy();
  }
});

test('setLink with an invalid MTU raises SystemError', { skip }, () => {
  const namespace = createTopology();
  try {
    const tapIndex = ipLink(namespace, TAP).ifindex;
    for (const mtu of [10, 70000]) {
      const kernelText = ipErrorText(namespace, 'link', 'set', 'dev', TAP, 'mtu', String(mtu));
      const error = rtnlError(namespace, `socket.setLink(${tapIndex}, { mtu: ${mtu} }, "tap ${TAP}");`);
      assert.equal(error.name, 'SystemError');
      assert.equal(error.code, 'EINVAL');
      assert.ok(error.message.includes(kernelText), `"${error.message}" lacks "${kernelText}"`);
      assert.ok(error.message.includes('EINVAL'), error.message);
      assert.ok(error.message.includes(`tap ${TAP}`), error.message);
      assert.ok(error.message.includes('RTM_NEWLINK'), error.message);
    }
    assert.equal(ipLink(namespace, TAP).mtu, 1300);
  } finally {
    namespace.destroy();
  }
});

// Unit tests of command-line parsing: tapgate-helper's QEMU bridge-helper arguments, `tapgate run`
// options, and the rewrite of QEMU bridge NICs into inherited tap descriptors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHelperArguments } from '../../src/cli/helper.js';
import { parseRunArguments, plannedNics } from '../../src/cli/run.js';
import { findBridgeNics, rewriteArguments, splitOptions, type NicRequest } from '../../src/cli/qemu-args.js';

const DEFAULTS = { model: 'virtio-net-pci', queues: 1 };
const MAC = '52:54:00:12:34:56';

test('parseHelperArguments reads the QEMU order', () => {
  assert.deepEqual(parseHelperArguments(['--use-vnet', '--br=br0', '--fd=5']), { useVnet: true, bridge: 'br0', fd: 5 });
});

test('parseHelperArguments reads the libvirt order', () => {
  assert.deepEqual(parseHelperArguments(['--use-vnet', '--fd=27', '--br=virbr0']), { useVnet: true, bridge: 'virbr0', fd: 27 });
});

test('parseHelperArguments works without --use-vnet', () => {
  assert.deepEqual(parseHelperArguments(['--br=lab', '--fd=3']), { useVnet: false, bridge: 'lab', fd: 3 });
});

test('parseHelperArguments keeps the bridge name whole', () => {
  // Name validation happens after parsing; the parser must not shorten or trim anything.
  assert.equal((parseHelperArguments(['--br=isolated-net-01X', '--fd=3']) as { bridge: string }).bridge, 'isolated-net-01X');
  assert.equal((parseHelperArguments(['--br= br0', '--fd=3']) as { bridge: string }).bridge, ' br0');
});

test('parseHelperArguments returns help', () => {
  assert.equal(parseHelperArguments(['--help']), 'help');
  assert.equal(parseHelperArguments(['--br=x', '--help']), 'help');
});

test('parseHelperArguments rejects an unknown option', () => {
  for (const argument of ['--acl=/etc/qemu/bridge.conf', '--br', '-fd=3', 'br0']) {
    assert.throws(() => parseHelperArguments(['--use-vnet', argument, '--br=br0', '--fd=3']), {
      message: `unknown argument ${JSON.stringify(argument)}`,
    });
  }
});

test('parseHelperArguments requires --br and --fd', () => {
  assert.throws(() => parseHelperArguments(['--use-vnet', '--fd=3']), { message: 'missing --br=BRIDGE' });
  assert.throws(() => parseHelperArguments(['--use-vnet', '--br=br0']), { message: 'missing --fd=UNIXFD' });
  assert.throws(() => parseHelperArguments([]), { message: 'missing --br=BRIDGE' });
});

test('parseHelperArguments rejects a bad --fd', () => {
  for (const value of ['', 'abc', '-1', '3x', '0x3', '1234567890', ' 3']) {
    assert.throws(() => parseHelperArguments(['--br=br0', `--fd=${value}`]), {
      message: `invalid --fd value ${JSON.stringify(value)}: expected a descriptor number`,
    });
  }
});

test('parseRunArguments reads options and the QEMU command', () => {
  const options = parseRunArguments(['--network', 'lab', '--model', 'e1000', '--mac', MAC, '--queues', '4', '--dry-run', '--', 'qemu-system-x86_64', '-m', '512', '--', 'x']);
  assert.deepEqual(options, {
    networks: ['lab'], model: 'e1000', mac: MAC, queues: 4, dryRun: true,
    command: ['qemu-system-x86_64', '-m', '512', '--', 'x'],
  });
});

test('parseRunArguments applies defaults', () => {
  assert.deepEqual(parseRunArguments(['--', 'qemu']), { networks: [], model: 'virtio-net-pci', mac: undefined, queues: 1, dryRun: false, command: ['qemu'] });
  assert.equal(parseRunArguments(['--help', '--', 'qemu']), 'help');
});

test('parseRunArguments rejects bad options', () => {
  const cases: [string[], string][] = [
    [[], 'missing the QEMU command after "--"'],
    [['--network', 'lab'], 'missing the QEMU command after "--"'],
    [['--network'], '--network needs a value'],
    [['--network', '--', 'qemu'], '--network needs a value'],
    [['--bridge', 'br0', '--', 'qemu'], 'unknown option "--bridge"'],
    [['--queues', '0', '--', 'qemu'], '--queues must be a positive integer, got "0"'],
    [['--queues', 'two', '--', 'qemu'], '--queues must be a positive integer, got "two"'],
    [['--network', 'isolated-net-01X', '--', 'qemu'], 'invalid network name "isolated-net-01X": is too long: 16 bytes, the maximum is 15'],
    [['--network', 'lab', '--mac', '01:00:5e:00:00:01', '--', 'qemu'], 'invalid MAC address "01:00:5e:00:00:01": is a multicast address'],
    [['--network', 'a', '--network', 'b', '--mac', MAC, '--', 'qemu'], '--mac applies to the NIC of a single --network, but 2 were given; put mac= in each -nic instead'],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseRunArguments(argv), { message }, JSON.stringify(argv));
  }
});

test('parseRunArguments takes repeated and = forms', () => {
  const options = parseRunArguments(['--network=lab', '--network', 'dmz', '--queues=2', '--', 'qemu']);
  assert.notEqual(options, 'help');
  if (options === 'help') return;
  assert.deepEqual(options.networks, ['lab', 'dmz']);
  assert.equal(options.queues, 2);
  const upper = parseRunArguments(['--network', 'lab', '--mac', '52:54:00:AB:CD:EF', '--', 'qemu']);
  assert.equal(upper !== 'help' && upper.mac, '52:54:00:ab:cd:ef');
});

test('plannedNics adds one NIC per network', () => {
  const options = parseRunArguments(['--network', 'lab', '--network', 'dmz', '--', 'qemu', '-nic', 'bridge,br=br0']);
  assert.notEqual(options, 'help');
  if (options === 'help') return;
  const nics = plannedNics(options);
  assert.deepEqual(nics.map((nic) => [nic.form, nic.network, nic.id]), [['nic', 'br0', 'tapgate0'], ['added', 'lab', 'tapgate1'], ['added', 'dmz', 'tapgate2']]);
});

test('plannedNics takes the MAC of a -netdev device', () => {
  const options = parseRunArguments(['--', 'qemu', '-netdev', 'bridge,id=n1,br=dmz', '-device', 'e1000,netdev=n1,mac=52:54:00:AA:00:01']);
  assert.notEqual(options, 'help');
  if (options === 'help') return;
  assert.equal(plannedNics(options)[0].mac, '52:54:00:aa:00:01');
});

test('splitOptions unescapes doubled commas', () => {
  assert.deepEqual(splitOptions('bridge,br=a,,b,helper=/x,,y'), ['bridge', 'br=a,b', 'helper=/x,y']);
  assert.deepEqual(splitOptions('bridge'), ['bridge']);
  assert.deepEqual(splitOptions('a,,,b'), ['a,', 'b']);
});

test('findBridgeNics reads -nic bridge sub-options', () => {
  const nics = findBridgeNics(['-m', '512', '-nic', `bridge,br=lab,model=e1000,mac=${MAC}`], DEFAULTS);
  assert.equal(nics.length, 1);
  assert.deepEqual(nics[0], { argumentIndex: 3, form: 'nic', network: 'lab', id: 'tapgate0', model: 'e1000', mac: MAC, queues: 1, extra: [] });
});

test('findBridgeNics reads -netdev bridge', () => {
  const nics = findBridgeNics(['-netdev', 'bridge,id=n1,br=dmz', '-device', 'virtio-net-pci,netdev=n1'], { model: 'e1000', queues: 2 });
  assert.equal(nics.length, 1);
  assert.equal(nics[0].form, 'netdev');
  assert.equal(nics[0].id, 'n1');
  assert.equal(nics[0].network, 'dmz');
  assert.equal(nics[0].queues, 2);
  assert.equal(nics[0].argumentIndex, 1);
});

test('findBridgeNics honours escapes and defaults', () => {
  const nics = findBridgeNics(['--nic', 'bridge,br=lab,,x,helper=/opt/q,,emu/helper', '-nic', 'bridge'], DEFAULTS);
  assert.equal(nics.length, 2);
  assert.equal(nics[0].network, 'lab,x');
  assert.equal(nics[0].model, 'virtio-net-pci');
  assert.equal(nics[1].network, 'br0');
  assert.equal(nics[1].id, 'tapgate1');
});

test('findBridgeNics ignores other NIC types', () => {
  assert.deepEqual(findBridgeNics(['-nic', 'user,model=e1000', '-netdev', 'tap,id=t,fd=3', '-netdev', 'bridgeX,br=b'], DEFAULTS), []);
});

test('findBridgeNics rejects an unsupported sub-option', () => {
  assert.throws(() => findBridgeNics(['-nic', 'bridge,br=lab,script=/etc/qemu-ifup'], DEFAULTS), {
    name: 'RangeError',
    message: '-nic bridge,br=lab,script=/etc/qemu-ifup: sub-option "script" is not supported by tapgate run; supported: br, model, mac, id, helper',
  });
  assert.throws(() => findBridgeNics(['-netdev', 'bridge,id=n1,br=lab,model=e1000'], DEFAULTS), {
    name: 'RangeError',
    message: /sub-option "model" is not supported by tapgate run; supported: br, id, helper$/,
  });
});

test('rewriteArguments gives one queue an fd', () => {
  const args = ['-m', '512', '-nic', `bridge,id=n0,br=lab,model=e1000,mac=${MAC}`, '-display', 'none'];
  const [nic] = findBridgeNics(args, DEFAULTS);
  const rewritten = rewriteArguments(args, [{ nic, childFds: [3], mac: MAC }]);
  assert.deepEqual(rewritten, [
    '-m', '512', '-netdev', 'tap,id=n0,fd=3', '-device', `e1000,netdev=n0,mac=${MAC}`,
    '-display', 'none',
  ]);
});

test('rewriteArguments gives four queues fds and vectors', () => {
  const args = ['-nic', 'bridge,id=n0,br=lab'];
  const [nic] = findBridgeNics(args, { model: 'virtio-net-pci', queues: 4 });
  const rewritten = rewriteArguments(args, [{ nic, childFds: [3, 4, 5, 6], mac: MAC }]);
  assert.deepEqual(rewritten, [
    '-netdev', 'tap,id=n0,fds=3:4:5:6',
    '-device', `virtio-net-pci,netdev=n0,mac=${MAC},mq=on,vectors=10`,
  ]);
});

test('rewriteArguments completes the -device of a -netdev', () => {
  const args = ['-netdev', 'bridge,id=n1,br=dmz', '-device', 'virtio-net-pci,netdev=n1'];
  const [nic] = findBridgeNics(args, DEFAULTS);
  assert.deepEqual(rewriteArguments(args, [{ nic, childFds: [3], mac: MAC }]), ['-netdev', 'tap,id=n1,fd=3', '-device', `virtio-net-pci,netdev=n1,mac=${MAC}`]);
  const queued = rewriteArguments(args, [{ nic, childFds: [3, 4], mac: MAC }]);
  assert.deepEqual(queued, ['-netdev', 'tap,id=n1,fds=3:4', '-device', `virtio-net-pci,netdev=n1,mac=${MAC},mq=on,vectors=6`]);
  const own = ['-netdev', 'bridge,id=n1,br=dmz', '-device', 'e1000,netdev=n1,mac=52:54:00:00:00:09,romfile=a,,b'];
  assert.deepEqual(rewriteArguments(own, [{ nic, childFds: [3], mac: MAC }])[3], 'e1000,netdev=n1,mac=52:54:00:00:00:09,romfile=a,,b');
});

test('rewriteArguments keeps escaped commas escaped', () => {
  const args = ['-netdev', 'bridge,id=n0,,script=/tmp/evil.sh,br=lab', '-nic', 'bridge,br=lab,model=virtio-net-pci,,romfile=/tmp/x'];
  const nics = findBridgeNics(args, DEFAULTS);
  const rewritten = rewriteArguments(args, nics.map((nic, index) => ({ nic, childFds: [3 + index], mac: MAC })));
  assert.equal(rewritten[1], 'tap,id=n0,,script=/tmp/evil.sh,fd=3');
  assert.equal(rewritten[5], `virtio-net-pci,,romfile=/tmp/x,netdev=tapgate1,mac=${MAC}`);
});

test('rewriteArguments keeps NIC order', () => {
  const args = ['-nic', 'bridge,br=lab', '-nic', 'user'];
  const [nic] = findBridgeNics(args, DEFAULTS);
  const rewritten = rewriteArguments(args, [{ nic, childFds: [3], mac: MAC }]);
  assert.deepEqual(rewritten, ['-netdev', 'tap,id=tapgate0,fd=3', '-device', `virtio-net-pci,netdev=tapgate0,mac=${MAC}`, '-nic', 'user']);
});

test('rewriteArguments appends the NIC added by --network', () => {
  const args = ['-m', '512', '-nic', 'bridge,br=lab'];
  const [bridgeNic] = findBridgeNics(args, DEFAULTS);
  // The shape `tapgate run --network dmz` plans for the NIC it adds.
  const added: NicRequest = { argumentIndex: -1, form: 'added', network: 'dmz', id: 'tapgate1', model: 'virtio-net-pci', mac: undefined, queues: 2, extra: [] };
  const rewritten = rewriteArguments(args, [
    { nic: bridgeNic, childFds: [3], mac: MAC },
    { nic: added, childFds: [4, 5], mac: '52:54:00:00:00:02' },
  ]);
  assert.deepEqual(rewritten, [
    '-m', '512', '-netdev', 'tap,id=tapgate0,fd=3',
    '-device', `virtio-net-pci,netdev=tapgate0,mac=${MAC}`,
    '-netdev', 'tap,id=tapgate1,fds=4:5',
    '-device', 'virtio-net-pci,netdev=tapgate1,mac=52:54:00:00:00:02,mq=on,vectors=6',
  ]);
  assert.deepEqual(args, ['-m', '512', '-nic', 'bridge,br=lab']);
});

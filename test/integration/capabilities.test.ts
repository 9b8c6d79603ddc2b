// The daemon's capabilities: started as full root it re-executes itself with only CAP_NET_ADMIN,
// CAP_SETUID and CAP_SETGID, keeping its pid and its log. Started already restricted, or with
// --keep-capabilities, it does not re-execute. Each daemon is checked from /proc/PID/status and by
// real grants: one decided by the TOML rules, one by bridge.conf, which needs CAP_SETUID and
// CAP_SETGID to read the file with the requester's credentials.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privilegedSkipReason, tapgateScript } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { probe } from '../support/probe.js';
import { waitForOutput } from '../support/wait.js';
import { capabilityMask, capabilityNames, parseCapabilityStatus, type CapabilitySets } from '../../src/sys/capabilities.js';

const NEEDED = capabilityMask(12 /* CAP_NET_ADMIN */, 7 /* CAP_SETUID */, 6 /* CAP_SETGID */);
const NEEDED_NAMES = ['CAP_SETGID', 'CAP_SETUID', 'CAP_NET_ADMIN'];
const CAP_SETPCAP = capabilityMask(8);
const REEXEC_LINE = '"Re-executing to drop capabilities"';
/** A fixed bridge MAC, so that doctor's MAC check stays quiet. */
const FIXED_MAC = '02:54:67:00:00:02';

/** Appends --keep-capabilities to the daemon's command line; `exec` keeps the daemon's pid. */
const KEEP_CAPABILITIES = ['sh', '-c', 'exec "$@" --keep-capabilities', 'sh'];

const policy = (user: TestUser, bridgeConf: string): string => `
[daemon]
audit_log = "AUDIT_LOG"

[networks.lab]
bridge = "brcap"

[[allow]]
name = "capability test"
users = ["${user.name}"]
networks = ["lab"]

[bridge_conf]
path = "${bridgeConf}"
`;

function processCapabilities(pid: number): CapabilitySets {
  const path = `/proc/${pid}/status`;
  return parseCapabilityStatus(readFileSync(path, 'utf8'), path);
}

/** Returns the daemon's log lines whose message is `message`, parsed. */
function logLines(daemon: DaemonHandle, message: string): Record<string, unknown>[] {
  return daemon.output().split('\n').filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.message === message);
}

function countOf(text: string, part: string): number {
  return text.split(part).length - 1;
}

describe('daemon capabilities', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let alice: TestUser;
  let directory: string;
  let bridgeConf: string;

  before(() => {
    ns = new Namespace('tg-caps');
    ns.addBridge('brcap', { address: FIXED_MAC });
    ns.addBridge('brconf', { address: '02:54:67:00:00:03' });
    alice = createUser();
    directory = mkdtempSync(join(tmpdir(), 'tapgate-caps-'));
    chmodSync(directory, 0o755);
    bridgeConf = join(directory, 'bridge.conf');
    writeFileSync(bridgeConf, 'allow brconf\n', { mode: 0o644 });
  });

  after(() => {
    ns?.destroy();
    if (alice) removeUser(alice);
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  /** Checks that alice gets taps through the TOML rule and through bridge.conf. */
  async function assertGrants(daemon: DaemonHandle): Promise<void> {
    const fromToml = probe(alice, daemon.socket, ['lab']);
    assert.equal(fromToml.ok, true, `${fromToml.error}\n${daemon.output()}`);
    const fromBridgeConf = probe(alice, daemon.socket, ['brconf']);
    assert.equal(fromBridgeConf.ok, true, `${fromBridgeConf.error}\n${daemon.output()}`);
    // Log lines written after the re-execution still reach the test.
    await waitForOutput(daemon, fromBridgeConf.grant!.name);
  }

  test('full root daemon keeps three capabilities', async () => {
    const daemon = await startDaemon(ns, policy(alice, bridgeConf));
    try {
      const pid = daemon.process.pid!;
      const sets = processCapabilities(pid);
      assert.equal(sets.bounding, NEEDED, `CapBnd: ${capabilityNames(sets.bounding).join(' ')}`);
      assert.equal(sets.permitted, NEEDED, `CapPrm: ${capabilityNames(sets.permitted).join(' ')}`);
      assert.equal(sets.effective, NEEDED, `CapEff: ${capabilityNames(sets.effective).join(' ')}`);
      assert.equal(sets.inheritable, 0n);
      assert.equal(sets.ambient, 0n);

      // execve() keeps the pid: the process the test started is the one that runs the daemon.
      const started = logLines(daemon, 'Daemon started');
      assert.equal(started.length, 1, daemon.output());
      assert.equal(started[0]!.pid, pid);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      assert.deepEqual(cmdline.slice(1, 3), [tapgateScript(), 'daemon']);
      assert.equal(countOf(daemon.output(), REEXEC_LINE), 1, daemon.output());

      const kept = logLines(daemon, 'Kept capabilities');
      assert.equal(kept.length, 1, daemon.output());
      assert.deepEqual(kept[0]!.capabilities, NEEDED_NAMES);
      assert.equal(kept[0]!.reexecuted, true);
      assert.equal(countOf(daemon.output(), '"level":"warn"'), 0, daemon.output());

      await assertGrants(daemon);
    } finally {
      await daemon.stop();
    }
  });

  test('doctor works with three capabilities', async () => {
    const daemon = await startDaemon(ns, policy(alice, bridgeConf));
    try {
      assert.equal(processCapabilities(daemon.process.pid!).effective, NEEDED);
      const run = runAs(alice, process.execPath, [tapgateScript(), 'doctor', '--json', '--network', 'lab'], { env: { TAPGATE_SOCKET: daemon.socket } });
      const report = JSON.parse(run.stdout) as { findings: { check: string; severity: string; message: string }[]; exitStatus: number };
      const problems = report.findings.filter((finding) => finding.severity === 'error' || finding.severity === 'warning');
      assert.deepEqual(problems, [], run.stdout);
      assert.equal(run.status, 0, run.stdout);
      // nft and iptables ran as the daemon's children with its three capabilities.
      assert.equal(logLines(daemon, 'Listing the firewall for diagnose failed').length, 0, daemon.output());
    } finally {
      await daemon.stop();
    }
  });

  test('keep-capabilities leaves the bounding set', async () => {
    const own = processCapabilities(process.pid);
    const daemon = await startDaemon(ns, policy(alice, bridgeConf), { wrapper: KEEP_CAPABILITIES });
    try {
      const sets = processCapabilities(daemon.process.pid!);
      assert.equal(sets.bounding, own.bounding, `CapBnd: ${capabilityNames(sets.bounding).join(' ')}`);
      assert.equal(sets.effective, own.effective);
      assert.equal(countOf(daemon.output(), REEXEC_LINE), 0, daemon.output());
      const kept = logLines(daemon, 'Kept capabilities');
      assert.equal(kept.length, 1, daemon.output());
      assert.equal(kept[0]!.reexecuted, false);
      assert.equal(kept[0]!.reason, '--keep-capabilities');
      await assertGrants(daemon);
    } finally {
      await daemon.stop();
    }
  });

  test('restricted bounding set needs no re-execution', async () => {
    const wrapper = ['setpriv', '--bounding-set=-all,+net_admin,+setuid,+setgid', '--'];
    const daemon = await startDaemon(ns, policy(alice, bridgeConf), { wrapper });
    try {
      const sets = processCapabilities(daemon.process.pid!);
      assert.equal(sets.bounding, NEEDED);
      assert.equal(sets.effective, NEEDED);
      assert.equal(countOf(daemon.output(), REEXEC_LINE), 0, daemon.output());
      const kept = logLines(daemon, 'Kept capabilities');
      assert.equal(kept.length, 1, daemon.output());
      assert.deepEqual(kept[0]!.capabilities, NEEDED_NAMES);
      assert.equal(kept[0]!.reexecuted, false);
      await assertGrants(daemon);
    } finally {
      await daemon.stop();
    }
  });

  test('root without CAP_SETPCAP keeps the rest', async () => {
    const own = processCapabilities(process.pid);
    const daemon = await startDaemon(ns, policy(alice, bridgeConf), { wrapper: ['setpriv', '--bounding-set=-setpcap', '--'] });
    try {
      const sets = processCapabilities(daemon.process.pid!);
      assert.equal(sets.bounding, own.bounding & ~CAP_SETPCAP);
      assert.equal(countOf(daemon.output(), REEXEC_LINE), 0, daemon.output());
      const warnings = logLines(daemon, 'The daemon cannot drop capabilities it does not need');
      assert.equal(warnings.length, 1, daemon.output());
      assert.match(String(warnings[0]!.reason), /CAP_SETPCAP/);
      assert.ok((warnings[0]!.capabilities as string[]).includes('CAP_SYS_ADMIN'), daemon.output());
      await assertGrants(daemon);
    } finally {
      await daemon.stop();
    }
  });

  test('second re-execution is refused', async () => {
    // The marker claims that this process was already re-executed once, which it was not.
    const daemon = await startDaemon(ns, policy(alice, bridgeConf), { wrapper: ['env', 'TAPGATE_CAPABILITY_REEXEC=1'] });
    try {
      assert.equal(countOf(daemon.output(), REEXEC_LINE), 0, daemon.output());
      const warnings = logLines(daemon, 'The daemon cannot drop capabilities it does not need');
      assert.equal(warnings.length, 1, daemon.output());
      assert.match(String(warnings[0]!.reason), /after re-executing once/);
      await assertGrants(daemon);
    } finally {
      await daemon.stop();
    }
  });

  test('missing CAP_SETUID is logged', async () => {
    const wrapper = ['setpriv', '--bounding-set=-all,+net_admin,+setgid', '--'];
    const daemon = await startDaemon(ns, policy(alice, bridgeConf), { wrapper });
    try {
      assert.equal(processCapabilities(daemon.process.pid!).effective, capabilityMask(12, 6));
      const warnings = daemon.output().split('\n').filter((line) => line.includes('"level":"warn"'));
      assert.equal(warnings.length, 1, daemon.output());
      assert.match(warnings[0]!, /The daemon lacks CAP_SETUID: bridge\.conf files cannot be read/);
      // bridge.conf is read for every request, also one that a TOML rule allows.
      for (const network of ['brconf', 'lab']) {
        const refused = probe(alice, daemon.socket, [network]);
        assert.equal(refused.ok, false, `${network}: ${daemon.output()}`);
        assert.match(refused.error ?? '', /CAP_SETUID/);
      }
    } finally {
      await daemon.stop();
    }
  });
});

describe('capability status parsing', () => {
  const status = [
    'Name:\tnode', 'CapInh:\t0000000000000000', 'CapPrm:\t00000000000010c0', 'CapEff:\t00000000000010c0',
    'CapBnd:\t000001ffffffffff', 'CapAmb:\t0000000000001000', 'NoNewPrivs:\t0',
  ].join('\n');

  test('status lines parse to masks', () => {
    const sets = parseCapabilityStatus(status, 'status');
    assert.equal(sets.inheritable, 0n);
    assert.equal(sets.permitted, NEEDED);
    assert.equal(sets.effective, NEEDED);
    assert.equal(sets.bounding, (1n << 41n) - 1n);
    assert.equal(sets.ambient, 1n << 12n);
  });

  test('missing CapAmb means empty', () => {
    const sets = parseCapabilityStatus(status.replace(/^CapAmb:.*$/m, ''), 'status');
    assert.equal(sets.ambient, 0n);
  });

  test('missing CapBnd is an error', () => {
    assert.throws(() => parseCapabilityStatus(status.replace(/^CapBnd:.*$/m, ''), '/proc/1/status'), /\/proc\/1\/status has no valid CapBnd line/);
  });

  test('names follow capability numbers', () => {
    assert.deepEqual(capabilityNames(NEEDED), NEEDED_NAMES);
    assert.deepEqual(capabilityNames(0n), []);
    assert.deepEqual(capabilityNames(1n << 45n), ['CAP_45']);
  });
});

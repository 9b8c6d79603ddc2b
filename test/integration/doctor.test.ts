// `tapgate doctor` end to end. Each cause is produced for real in a namespace the test creates,
// and an unprivileged user runs doctor in the host namespace. The test checks the finding and its
// printed fix, applies that fix as root where the daemon lives, and checks that the cause is gone.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { privilegedSkipReason, tapgateScript } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { createUser, removeUser, runAs, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';
import { holdTap } from '../support/probe.js';
import { errnoName } from '../../src/sys/errors.js';
import { parseRequest, RequestError } from '../../src/protocol/messages.js';
import { findForwardBlocks, parseIptablesRules, parseNftRuleset } from '../../src/daemon/firewall.js';
import { classifyTunFailure, exitStatus, type Finding, type Fix } from '../../src/cli/doctor-checks.js';
import type { DoctorReport } from '../../src/cli/doctor.js';
import type { TunFacts } from '../../src/protocol/diagnose.js';
import { waitUntil } from '../support/wait.js';

const SYSCTL = 'net.bridge.bridge-nf-call-iptables';
const SYSCTL_PATH = '/proc/sys/net/bridge/bridge-nf-call-iptables';

interface DoctorRun {
  status: number | null;
  report: DoctorReport;
  /** The human-readable output of a second run. */
  text: string;
}

/** Runs `tapgate doctor --json` and plain `tapgate doctor` as `user` against `socket`. */
function runDoctor(user: TestUser, socket: string, args: string[] = []): DoctorRun {
  const env = { TAPGATE_SOCKET: socket };
  const json = runAs(user, process.execPath, [tapgateScript(), 'doctor', '--json', ...args], { env });
  let report: DoctorReport;
  try {
    report = JSON.parse(json.stdout) as DoctorReport;
  } catch {
    throw new Error(`doctor printed no JSON (exit ${json.status}):\n${json.stdout}${json.stderr}`);
  }
  const text = runAs(user, process.execPath, [tapgateScript(), 'doctor', ...args], { env });
  assert.equal(text.status, json.status, `plain and --json runs disagree:\n${text.stdout}`);
  return { status: json.status, report, text: text.stdout };
}

/** Returns the one finding of `check` that is a problem (error or warning); fails when there is none or several. */
function problem(run: DoctorRun, check: Finding['check']): Finding {
  const found = run.report.findings.filter((finding) => finding.check === check && (finding.severity === 'error' || finding.severity === 'warning'));
  assert.equal(found.length, 1, `expected one ${check} problem, got:\n${run.text}`);
  return found[0]!;
}

function problems(run: DoctorRun, check: Finding['check']): Finding[] {
  return run.report.findings.filter((finding) => finding.check === check && (finding.severity === 'error' || finding.severity === 'warning'));
}

function commands(fix: Fix | undefined): string[] {
  return (fix?.steps ?? []).map((step) => step.text);
}

/** Runs each command of `fix` with `run`, appends policy steps to their file; instructions cannot be applied. */
function applyFix(fix: Fix, run: (command: string) => void): void {
  for (const step of fix.steps) {
    if (step.kind === 'action') throw new Error(`cannot apply an instruction: ${step.text}`);
    if (step.kind === 'policy') appendFileSync(step.file!, `\n${step.text}\n`);
    else run(step.text);
  }
}

function shellIn(ns: Namespace): (command: string) => void {
  return (command) => {
    const result = ns.exec('sh', ['-c', command]);
    assert.equal(result.status, 0, `${command} failed in ${ns.name}: ${result.stderr}`);
  };
}

function shellInMountNamespaceOf(pid: number): (command: string) => void {
  return (command) => {
    const result = spawnSync('nsenter', ['--target', String(pid), '--mount', '--', 'sh', '-c', command], { encoding: 'utf8' });
    assert.equal(result.status, 0, `${command} failed in the mount namespace of ${pid}: ${result.stderr}`);
  };
}

/** Stops a daemon quickly: SIGKILL first, because a daemon blocked in its link-event read ignores SIGTERM for a while. */
async function stopDaemon(daemon: DaemonHandle | undefined): Promise<void> {
  if (!daemon) return;
  daemon.process.kill('SIGKILL');
  await daemon.stop();
}

/** Starts a daemon on an existing config and socket path, as the printed `tapgate daemon --socket PATH` fix does. */
async function startDaemonAt(ns: Namespace, config: string, socket: string): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, tapgateScript(), 'daemon', '--config', config, '--socket', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk) => { output += chunk; });
  const started = await waitUntil(() => output.includes('"Daemon started"') || child.exitCode !== null, 15_000);
  if (!started || child.exitCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`The daemon did not start:\n${output}`);
  }
  return child;
}

async function killProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

async function reloadPolicy(daemon: DaemonHandle, apply: () => void): Promise<void> {
  const count = (): number => daemon.output().split('"Policy reload').length;
  const before = count();
  apply();
  assert.ok(await waitUntil(() => count() > before, 5000), `the daemon did not reload its policy:\n${daemon.output()}`);
}

const allowPolicy = (user: TestUser, bridge: string, extra = '') => `
[networks.lab]
bridge = "${bridge}"

[[allow]]
users = ["${user.name}"]
networks = ["lab"]
${extra}
`;

/** A namespace, a test user and a daemon, removed again by `close`. */
interface Scene {
  ns: Namespace;
  user: TestUser;
  daemon: DaemonHandle;
  close(): Promise<void>;
}

async function openScene(prefix: string, policy: (user: TestUser) => string, prepare: (ns: Namespace) => void, options: { wrapper?: string[] } = {}): Promise<Scene> {
  const ns = new Namespace(prefix);
  let user: TestUser | undefined;
  try {
    prepare(ns);
    user = createUser();
    const daemon = await startDaemon(ns, policy(user), options);
    const created = user;
    return {
      ns, user: created, daemon,
      async close() {
        await stopDaemon(daemon);
        ns.destroy();
        removeUser(created);
      },
    };
  } catch (error) {
    ns.destroy();
    if (user) removeUser(user);
    throw error;
  }
}

/** A fixed bridge MAC, so that the MAC check stays quiet where a test is about something else. */
const FIXED_MAC = '02:54:67:00:00:01';

describe('tapgate doctor', { skip: privilegedSkipReason() }, () => {
  test('doctor passes a healthy setup', async () => {
    const scene = await openScene('tg-doc-ok', (user) => allowPolicy(user, 'brok'), (ns) => ns.addBridge('brok', { address: FIXED_MAC }));
    try {
      const run = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(run.status, 0, run.text);
      assert.equal(run.report.exitStatus, 0);
      assert.deepEqual(run.report.findings.filter((finding) => finding.severity === 'error' || finding.severity === 'warning'), []);
      assert.match(run.text, /exit status 0/);
    } finally {
      await scene.close();
    }
  });

  test('doctor reports a missing bridge', async () => {
    const scene = await openScene('tg-doc-nobr', (user) => allowPolicy(user, 'brmissing'), () => {});
    try {
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 1, before.text);
      const finding = problem(before, 'bridge');
      assert.equal(finding.severity, 'error');
      assert.match(finding.message, /brmissing/);
      assert.match(finding.message, /does not exist/);
      assert.deepEqual(commands(finding.fixes[0]), ['ip link add brmissing type bridge', 'ip link set brmissing up']);
      assert.match(before.text, /fix: +ip link add brmissing type bridge/);

      applyFix(finding.fixes[0]!, shellIn(scene.ns));
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.deepEqual(problems(after, 'bridge'), []);
      assert.notEqual(after.status, 1, after.text);
    } finally {
      await scene.close();
    }
  });

  test('doctor reports a veth named as a bridge', async () => {
    const scene = await openScene('tg-doc-veth', (user) => allowPolicy(user, 'brfake'), (ns) => ns.ip('link', 'add', 'brfake', 'type', 'veth', 'peer', 'name', 'brfakepeer'));
    try {
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 1, before.text);
      const finding = problem(before, 'bridge');
      assert.match(finding.message, /brfake/);
      assert.match(finding.message, /a veth device, not a bridge/);
      assert.match(commands(finding.fixes[0])[0]!, /point network lab at a bridge: bridge = "NAME" at .*tapgate\.toml:\d+/);
      assert.deepEqual(commands(finding.fixes[1]), ['ip link del brfake', 'ip link add brfake type bridge', 'ip link set brfake up']);

      applyFix(finding.fixes[1]!, shellIn(scene.ns));
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.deepEqual(problems(after, 'bridge'), []);
      assert.notEqual(after.status, 1, after.text);
    } finally {
      await scene.close();
    }
  });

  test('doctor reports a bridge that is down', async () => {
    const scene = await openScene('tg-doc-down', (user) => allowPolicy(user, 'brdown'), (ns) => {
      ns.addBridge('brdown', { address: FIXED_MAC });
      ns.ip('link', 'set', 'brdown', 'down');
    });
    try {
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 2, before.text);
      const finding = problem(before, 'bridge');
      assert.equal(finding.severity, 'warning');
      assert.match(finding.message, /brdown .* is down/);
      assert.deepEqual(commands(finding.fixes[0]), ['ip link set brdown up']);

      applyFix(finding.fixes[0]!, shellIn(scene.ns));
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(after.status, 0, after.text);
    } finally {
      await scene.close();
    }
  });

  test('doctor reports a reached tap quota', async () => {
    const scene = await openScene('tg-doc-quota', (user) => allowPolicy(user, 'brquota', 'max_taps = 1'), (ns) => ns.addBridge('brquota', { address: FIXED_MAC }));
    let held: Awaited<ReturnType<typeof holdTap>> | undefined;
    try {
      held = await holdTap(scene.user, scene.daemon.socket, ['lab']);
      assert.equal(held.report.ok, true, held.report.error);
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 1, before.text);
      const finding = problem(before, 'quota');
      assert.match(finding.message, /Tap quota reached on network lab: 1 of 1 taps in use/);
      assert.match(finding.message, /allow rule at .*tapgate\.toml:\d+/);
      assert.match(commands(finding.fixes[0])[0]!, /stop a VM that uses one of your taps on lab/);
      assert.match(commands(finding.fixes[1])[0]!, /raise max_taps in the allow rule at .*tapgate\.toml:\d+, for example max_taps = 2/);

      // The first fix: stop the VM, which closes the tap's descriptor.
      await held.release();
      assert.ok(await waitUntil(() => scene.ns.ports('brquota').length === 0, 5000), 'the held tap did not go away');
      let after = runDoctor(scene.user, scene.daemon.socket);
      for (let attempt = 0; attempt < 20 && after.status !== 0; attempt++) {
        await sleep(100);
        after = runDoctor(scene.user, scene.daemon.socket);
      }
      assert.equal(after.status, 0, after.text);
      assert.match(after.text, /0 of 1 taps in use on network lab/);
    } finally {
      await held?.release();
      await scene.close();
    }
  });

  test('doctor prints the allow rule a user lacks', async () => {
    const scene = await openScene('tg-doc-rule', () => '[networks.lab]\nbridge = "brrule"\n', (ns) => ns.addBridge('brrule', { address: FIXED_MAC }));
    try {
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 1, before.text);
      const finding = problem(before, 'rule');
      assert.match(finding.message, new RegExp(`denied to user ${scene.user.name}`));
      const [snippet, reload] = finding.fixes[0]!.steps;
      assert.deepEqual(snippet, { kind: 'policy', file: scene.daemon.config, text: `[[allow]]\nusers = ["${scene.user.name}"]\nnetworks = ["lab"]` });
      assert.equal(reload?.text, `kill -HUP ${scene.daemon.process.pid}`);
      assert.ok(before.text.includes(`add to ${scene.daemon.config}:\n`), before.text);
      assert.ok(before.text.includes(`    [[allow]]\n`), before.text);

      await reloadPolicy(scene.daemon, () => applyFix(finding.fixes[0]!, shellIn(scene.ns)));
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(after.status, 0, after.text);
      assert.deepEqual(problems(after, 'rule'), []);
    } finally {
      await scene.close();
    }
  });

  test('doctor names an unknown network', async () => {
    const scene = await openScene('tg-doc-unk', (user) => allowPolicy(user, 'brunk'), (ns) => ns.addBridge('brunk', { address: FIXED_MAC }));
    try {
      const run = runDoctor(scene.user, scene.daemon.socket, ['--network', 'nosuchnet']);
      assert.equal(run.status, 1, run.text);
      const finding = problem(run, 'rule');
      assert.match(finding.message, /"nosuchnet" is neither a network nor a network's bridge/);
      assert.equal(finding.fixes[0]?.steps[0]?.text, '[networks.nosuchnet]\nbridge = "BRIDGE"');
    } finally {
      await scene.close();
    }
  });

  test('doctor reports an unreachable daemon', async () => {
    const scene = await openScene('tg-doc-sock', (user) => allowPolicy(user, 'brsock'), (ns) => ns.addBridge('brsock', { address: FIXED_MAC }));
    const { daemon, user } = scene;
    let restarted: ChildProcess | undefined;
    try {
      // A daemon killed with SIGKILL leaves its socket file behind: connect gives ECONNREFUSED.
      daemon.process.kill('SIGKILL');
      assert.ok(await waitUntil(() => daemon.process.exitCode !== null || daemon.process.signalCode !== null, 5000));
      const refused = runDoctor(user, daemon.socket);
      assert.equal(refused.status, 1, refused.text);
      const refusedFinding = problem(refused, 'daemon');
      assert.match(refusedFinding.message, /ECONNREFUSED/);
      assert.ok(refusedFinding.message.includes(daemon.socket), refusedFinding.message);
      assert.deepEqual(commands(refusedFinding.fixes[0]), [`tapgate daemon --socket ${daemon.socket}`]);

      restarted = await startDaemonAt(scene.ns, daemon.config, daemon.socket);
      assert.equal(runDoctor(user, daemon.socket).status, 0);

      // A daemon stopped with SIGTERM removes its socket: connect gives ENOENT.
      restarted.kill('SIGTERM');
      assert.ok(await waitUntil(() => !existsSync(daemon.socket), 5000), 'the daemon did not remove its socket');
      await killProcess(restarted);
      const missing = runDoctor(user, daemon.socket);
      assert.equal(missing.status, 1, missing.text);
      const missingFinding = problem(missing, 'daemon');
      assert.match(missingFinding.message, /No daemon socket at .* \(\$TAPGATE_SOCKET\): no such file or directory \(ENOENT\)/);
      assert.deepEqual(commands(missingFinding.fixes[0]), [`tapgate daemon --socket ${daemon.socket}`]);

      restarted = await startDaemonAt(scene.ns, daemon.config, daemon.socket);
      assert.equal(runDoctor(user, daemon.socket).status, 0);

      // A directory the user may not search gives EACCES.
      chmodSync(daemon.directory, 0o700);
      const denied = runDoctor(user, daemon.socket);
      assert.equal(denied.status, 1, denied.text);
      const deniedFinding = problem(denied, 'daemon');
      assert.match(deniedFinding.message, /permission denied \(EACCES\)/);
      assert.deepEqual(commands(deniedFinding.fixes[0]), [`chmod a+x ${daemon.directory}`]);

      applyFix(deniedFinding.fixes[0]!, (command) => assert.equal(spawnSync('sh', ['-c', command]).status, 0, command));
      assert.equal(runDoctor(user, daemon.socket).status, 0);
    } finally {
      await killProcess(restarted);
      await scene.close();
    }
  });

  test('doctor reports bridge ports with different MTUs', async () => {
    const scene = await openScene('tg-doc-mtu', (user) => allowPolicy(user, 'brmtu'), (ns) => {
      ns.addBridge('brmtu', { address: FIXED_MAC });
      ns.ip('link', 'add', 'p9000', 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'q9000', 'mtu', '9000');
      ns.ip('link', 'set', 'p9000', 'master', 'brmtu', 'up');
      ns.ip('link', 'add', 'p1500', 'type', 'veth', 'peer', 'name', 'q1500');
      ns.ip('link', 'set', 'p1500', 'master', 'brmtu', 'up');
    });
    const bridgeMtu = (): number => Number(scene.ns.exec('cat', ['/sys/class/net/brmtu/mtu']).stdout.trim());
    try {
      // The kernel pulled the unpinned bridge down to its smallest port.
      assert.equal(bridgeMtu(), 1500);
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 2, before.text);
      const finding = problem(before, 'mtu');
      assert.match(finding.message, /brmtu has MTU 1500 but its ports differ \(p9000 9000, p1500 1500\)/);
      assert.deepEqual(commands(finding.fixes[0]), ['ip link set dev brmtu mtu 9000', 'ip link set dev p1500 mtu 9000']);

      applyFix(finding.fixes[0]!, shellIn(scene.ns));
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.deepEqual(problems(after, 'mtu'), []);
      assert.equal(after.status, 0, after.text);

      // Setting the bridge first pinned it: a new 1500-byte port no longer lowers it.
      scene.ns.ip('link', 'add', 'p1500b', 'type', 'veth', 'peer', 'name', 'q1500b');
      scene.ns.ip('link', 'set', 'p1500b', 'master', 'brmtu', 'up');
      assert.equal(bridgeMtu(), 9000);
      const pinned = runDoctor(scene.user, scene.daemon.socket);
      assert.deepEqual(commands(problem(pinned, 'mtu').fixes[0]), ['ip link set dev p1500b mtu 9000']);
    } finally {
      await scene.close();
    }
  });

  test('doctor reports a bridge without a fixed MAC address', async () => {
    const scene = await openScene('tg-doc-mac', (user) => allowPolicy(user, 'brmac'), (ns) => ns.addBridge('brmac'));
    try {
      const address = scene.ns.exec('cat', ['/sys/class/net/brmac/address']).stdout.trim();
      const before = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(before.status, 2, before.text);
      const finding = problem(before, 'mac');
      assert.match(finding.message, /brmac has no fixed MAC address \(addr_assign_type 1, not 3\)/);
      assert.deepEqual(commands(finding.fixes[0]), [`ip link set dev brmac address ${address}`]);

      applyFix(finding.fixes[0]!, shellIn(scene.ns));
      assert.equal(scene.ns.exec('cat', ['/sys/class/net/brmac/addr_assign_type']).stdout.trim(), '3');
      const after = runDoctor(scene.user, scene.daemon.socket);
      assert.equal(after.status, 0, after.text);
    } finally {
      await scene.close();
    }
  });
});

/**
 * Returns why br_netfilter cannot be tested inside a namespace, or undefined when it can. A new
 * namespace shows /proc/sys/net/bridge only when br_netfilter is loaded and registers its sysctls
 * per network namespace. The test must neither load the module nor change the host's value.
 */
function brNetfilterSkipReason(): string | undefined {
  const reason = privilegedSkipReason();
  if (reason) return reason;
  const probe = new Namespace('tg-doc-nfp');
  try {
    if (probe.exec('cat', [SYSCTL_PATH]).status !== 0) return `${SYSCTL} does not exist in a new network namespace (br_netfilter not loaded, or a kernel that keeps it global)`;
    if (probe.exec('busybox', ['ping', '-c', '1', '-W', '1', '127.0.0.1']).status !== 0) return 'needs busybox ping to prove that traffic is dropped';
    return undefined;
  } finally {
    probe.destroy();
  }
}

/** A bridge `brnf` in its own namespace with two ports leading to two more namespaces, 10.77.0.1 and .2. */
interface BridgedPair {
  scene: Scene;
  peers: Namespace[];
  reachable(): boolean;
  close(): Promise<void>;
}

async function openBridgedPair(prefix: string): Promise<BridgedPair> {
  const hostValue = readFileSync(SYSCTL_PATH, 'utf8');
  const peers: Namespace[] = [];
  const scene = await openScene(prefix, (user) => allowPolicy(user, 'brnf'), (ns) => {
    ns.addBridge('brnf', { address: FIXED_MAC });
    for (const [index, name] of ['a', 'b'].entries()) {
      const peer = new Namespace(`${prefix}-${name}`);
      peers.push(peer);
      ns.ip('link', 'add', `p${name}`, 'type', 'veth', 'peer', 'name', `e${name}`, 'netns', peer.name);
      ns.ip('link', 'set', `p${name}`, 'master', 'brnf', 'up');
      peer.ip('addr', 'add', `10.77.0.${index + 1}/24`, 'dev', `e${name}`);
      peer.ip('link', 'set', `e${name}`, 'up');
    }
  }).catch((error: unknown) => {
    for (const peer of peers) peer.destroy();
    throw error;
  });
  return {
    scene, peers,
    reachable: () => peers[0]!.exec('busybox', ['ping', '-c', '1', '-W', '1', '10.77.0.2']).status === 0,
    async close() {
      await scene.close();
      for (const peer of peers) peer.destroy();
      assert.equal(readFileSync(SYSCTL_PATH, 'utf8'), hostValue, `the host's ${SYSCTL} changed`);
    },
  };
}

function run(ns: Namespace, command: string, args: string[]): void {
  const result = ns.exec(command, args);
  assert.equal(result.status, 0, `${command} ${args.join(' ')}: ${result.stderr}`);
}

describe('tapgate doctor and br_netfilter', { skip: brNetfilterSkipReason() }, () => {
  test('doctor reports an nft forward policy of drop', async () => {
    const pair = await openBridgedPair('tg-doc-nft');
    const { ns, user, daemon } = pair.scene;
    try {
      run(ns, 'sysctl', ['-w', `${SYSCTL}=1`]);
      assert.ok(await waitUntil(pair.reachable, 5000), 'no traffic across the bridge before the firewall');
      run(ns, 'nft', ['add', 'table', 'ip', 'filter']);
      run(ns, 'nft', ['add', 'chain', 'ip', 'filter', 'forward', '{ type filter hook forward priority 0; policy drop; }']);
      assert.equal(pair.reachable(), false);

      const before = runDoctor(user, daemon.socket);
      assert.equal(before.status, 2, before.text);
      const finding = problem(before, 'br_netfilter');
      assert.match(finding.message, /brnf/);
      assert.match(finding.message, /net\.bridge\.bridge-nf-call-iptables=1/);
      assert.match(finding.message, /nft chain ip filter forward with policy drop/);
      assert.deepEqual(commands(finding.fixes[0]), ['nft insert rule ip filter forward iifname "brnf" oifname "brnf" accept']);
      assert.deepEqual(commands(finding.fixes[1]), [`sysctl -w ${SYSCTL}=0`]);

      applyFix(finding.fixes[0]!, shellIn(ns));
      const accepted = runDoctor(user, daemon.socket);
      assert.deepEqual(problems(accepted, 'br_netfilter'), []);
      assert.equal(accepted.status, 0, accepted.text);
      assert.equal(pair.reachable(), true);

      run(ns, 'nft', ['flush', 'chain', 'ip', 'filter', 'forward']);
      assert.equal(pair.reachable(), false);
      const again = problem(runDoctor(user, daemon.socket), 'br_netfilter');
      applyFix(again.fixes[1]!, shellIn(ns));
      const disabled = runDoctor(user, daemon.socket);
      assert.equal(disabled.status, 0, disabled.text);
      assert.equal(pair.reachable(), true);
    } finally {
      await pair.close();
    }
  });

  test('doctor reports the bridge option nf_call_iptables', async () => {
    const pair = await openBridgedPair('tg-doc-nfb');
    const { ns, user, daemon } = pair.scene;
    try {
      run(ns, 'sysctl', ['-w', `${SYSCTL}=0`]);
      run(ns, 'nft', ['add', 'table', 'ip', 'filter']);
      run(ns, 'nft', ['add', 'chain', 'ip', 'filter', 'forward', '{ type filter hook forward priority 0; policy drop; }']);
      assert.ok(await waitUntil(pair.reachable, 5000), 'traffic dropped although the sysctl is 0');
      assert.equal(runDoctor(user, daemon.socket).status, 0);

      ns.ip('link', 'set', 'brnf', 'type', 'bridge', 'nf_call_iptables', '1');
      assert.equal(pair.reachable(), false);
      const finding = problem(runDoctor(user, daemon.socket), 'br_netfilter');
      assert.match(finding.message, /brnf's own nf_call_iptables=1/);
      assert.deepEqual(commands(finding.fixes[1]), ['ip link set dev brnf type bridge nf_call_iptables 0']);

      applyFix(finding.fixes[1]!, shellIn(ns));
      assert.equal(runDoctor(user, daemon.socket).status, 0);
      assert.equal(pair.reachable(), true);
    } finally {
      await pair.close();
    }
  });

  test('doctor reports an iptables drop rule for the bridge', async (t: TestContext) => {
    const pair = await openBridgedPair('tg-doc-ipt');
    const { ns, user, daemon } = pair.scene;
    try {
      if (ns.exec('iptables', ['-S']).status !== 0) {
        t.skip('needs iptables');
        return;
      }
      run(ns, 'sysctl', ['-w', `${SYSCTL}=1`]);
      run(ns, 'iptables', ['-A', 'FORWARD', '-i', 'brnf', '-j', 'DROP']);
      assert.equal(pair.reachable(), false);

      const before = runDoctor(user, daemon.socket);
      assert.equal(before.status, 2, before.text);
      const finding = problem(before, 'br_netfilter');
      assert.match(finding.message, /iptables chain FORWARD \(table filter\), rule -A FORWARD -i brnf -j DROP/);
      assert.deepEqual(commands(finding.fixes[0]), ['iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT']);

      applyFix(finding.fixes[0]!, shellIn(ns));
      const after = runDoctor(user, daemon.socket);
      assert.equal(after.status, 0, after.text);
      assert.equal(pair.reachable(), true);
    } finally {
      await pair.close();
    }
  });
});

// The tun tests hide or replace /dev/net/tun for the daemon only: it runs in a private mount
// namespace with a tmpfs on /dev/net, so the host's /dev is never touched.

function tunWrapper(mountOptions: string, node: string, dropDac = false): string[] {
  const script = `mount -t tmpfs -o ${mountOptions} tapgate-test /dev/net${node ? ` && ${node}` : ''} && exec "$@"`;
  const capabilities = dropDac ? ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', '--'] : [];
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', ...capabilities];
}

function tunSkipReason(): string | undefined {
  const reason = privilegedSkipReason();
  if (reason) return reason;
  if (!/^\s*200\s+tun$/m.test(readFileSync('/proc/misc', 'utf8'))) return 'needs the tun driver registered as misc minor 200';
  if (spawnSync('nsenter', ['--version']).status !== 0) return 'needs nsenter';
  return undefined;
}

async function tunScene(prefix: string, wrapper: string[]): Promise<Scene> {
  return openScene(prefix, (user) => allowPolicy(user, 'brtun'), (ns) => ns.addBridge('brtun', { address: FIXED_MAC }), { wrapper });
}

describe('tapgate doctor and /dev/net/tun', { skip: tunSkipReason() }, () => {
  const cases = [
    {
      name: 'doctor reports a missing tun node',
      wrapper: tunWrapper('mode=0755', ''),
      message: /cannot open \/dev\/net\/tun: no such file or directory \(ENOENT\); the tun driver is loaded but \/dev\/net\/tun does not exist/,
      fix: ['mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200'],
    },
    {
      name: 'doctor reports a tun node without a driver',
      // Minor 250 of the misc major has no driver, so open() fails with ENODEV as with the module missing.
      wrapper: tunWrapper('mode=0755', 'mknod -m 0666 /dev/net/tun c 10 250'),
      message: /no such device \(ENODEV\); \/dev\/net\/tun is device 10:250, but the tun driver is 10:200/,
      fix: ['rm -f /dev/net/tun && mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200'],
    },
    {
      name: 'doctor reports a nodev mount as a sandbox block',
      wrapper: tunWrapper('mode=0755,nodev', 'mknod -m 0666 /dev/net/tun c 10 200'),
      message: /permission denied \(EACCES\); blocked by security policy or sandbox: \/dev\/net is mounted nodev/,
      fix: ['mount -o remount,dev /dev/net'],
    },
    {
      name: 'doctor reports tun mode bits that deny the daemon',
      wrapper: tunWrapper('mode=0755', 'mknod -m 0600 /dev/net/tun c 10 200 && chown 65534:65534 /dev/net/tun', true),
      message: /permission denied \(EACCES\); its mode 0600 does not let the daemon read and write it/,
      fix: ['chmod 0666 /dev/net/tun'],
    },
  ];

  for (const scenario of cases) {
    test(scenario.name, async () => {
      const scene = await tunScene('tg-doc-tun', scenario.wrapper);
      try {
        const before = runDoctor(scene.user, scene.daemon.socket);
        assert.equal(before.status, 1, before.text);
        const finding = problem(before, 'tun');
        assert.match(finding.message, scenario.message);
        assert.deepEqual(commands(finding.fixes[0]), scenario.fix);
        const note = before.report.findings.find((candidate) => candidate.check === 'namespace' && /mount namespace/.test(candidate.message));
        assert.match(note?.message ?? '', new RegExp(`nsenter --target ${scene.daemon.process.pid} --mount`));

        applyFix(finding.fixes[0]!, shellInMountNamespaceOf(scene.daemon.process.pid!));
        const after = runDoctor(scene.user, scene.daemon.socket);
        assert.deepEqual(problems(after, 'tun'), []);
        assert.equal(after.status, 0, after.text);
      } finally {
        await scene.close();
      }
    });
  }
});

// Causes that cannot be produced safely on a shared host (unloading the tun module, an LSM
// profile, seccomp): the classification is checked with the errno values the kernel returns.
describe('classifyTunFailure', () => {
  const failure = (errno: number, facts: Partial<Extract<TunFacts, { ok: false }>> = {}): Extract<TunFacts, { ok: false }> => ({
    ok: false, path: '/dev/net/tun', code: errnoName(errno), message: '', mode: 0o666, characterDevice: true,
    modeAllowsDaemon: true, device: { major: 10, minor: 200 }, driverRegistered: true, driverMinor: 200,
    mount: { point: '/dev', nodev: false }, ...facts,
  });

  test('classifyTunFailure reads ENODEV without a driver as a missing module', () => {
    const result = classifyTunFailure(failure(osConstants.errno.ENODEV, { driverRegistered: false, driverMinor: null }));
    assert.equal(result.cause, 'driver-missing');
    assert.equal(result.hint, 'tun module not available');
    assert.deepEqual(commands(result.fixes[0]), ['modprobe tun']);
  });

  test('classifyTunFailure reads ENOENT without a driver as a missing module', () => {
    const result = classifyTunFailure(failure(osConstants.errno.ENOENT, { driverRegistered: false, driverMinor: null, device: null, mode: null, characterDevice: null, modeAllowsDaemon: null }));
    assert.equal(result.cause, 'driver-missing');
  });

  test('classifyTunFailure reads EPERM with open modes as a sandbox', () => {
    const result = classifyTunFailure(failure(osConstants.errno.EPERM));
    assert.equal(result.cause, 'security-policy');
    assert.match(result.hint, /^blocked by security policy or sandbox/);
    assert.match(commands(result.fixes[1])[0]!, /DeviceAllow=\/dev\/net\/tun rw/);
  });

  test('classifyTunFailure reads EACCES with open modes as an LSM block', () => {
    const result = classifyTunFailure(failure(osConstants.errno.EACCES));
    assert.equal(result.cause, 'security-policy');
    assert.match(commands(result.fixes[0])[0]!, /AppArmor/);
  });

  test('classifyTunFailure reads a regular file as not a device', () => {
    const result = classifyTunFailure(failure(osConstants.errno.ENOTTY, { characterDevice: false }));
    assert.equal(result.cause, 'not-a-device');
  });

  test('exitStatus orders error, warning and success', () => {
    const finding = (severity: Finding['severity']): Finding => ({ check: 'tun', severity, message: '', fixes: [] });
    assert.equal(exitStatus([finding('ok'), finding('info')]), 0);
    assert.equal(exitStatus([finding('ok'), finding('warning')]), 2);
    assert.equal(exitStatus([finding('warning'), finding('error')]), 1);
  });
});

// The rule evaluation on listings in the format the tools print; the privileged tests above run
// the tools themselves for the common cases.
describe('findForwardBlocks', () => {
  const iptables = (...rules: string[]) => parseIptablesRules(['-P INPUT ACCEPT', '-P FORWARD DROP', '-P OUTPUT ACCEPT', '-N DOCKER-USER', ...rules].join('\n'));

  test('findForwardBlocks follows a jump that returns', () => {
    const blocks = findForwardBlocks([iptables('-A FORWARD -j DOCKER-USER', '-A DOCKER-USER -j RETURN')], 'br0');
    assert.deepEqual(blocks, [{ tool: 'iptables', family: 'ip', table: 'filter', chain: 'FORWARD', by: 'policy', certain: true }]);
  });

  test('findForwardBlocks accepts physdev-is-bridged', () => {
    assert.deepEqual(findForwardBlocks([iptables('-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT')], 'br0'), []);
  });

  test('findForwardBlocks ignores a negated physdev match', () => {
    const blocks = findForwardBlocks([iptables('-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT')], 'br0');
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]?.by, 'policy');
  });

  test('findForwardBlocks matches interface wildcards', () => {
    const table = parseIptablesRules('-P FORWARD ACCEPT\n-A FORWARD -i br+ -j DROP');
    assert.deepEqual(findForwardBlocks([table], 'br0').map((block) => block.rule), ['-A FORWARD -i br+ -j DROP']);
    assert.deepEqual(findForwardBlocks([table], 'virbr0'), []);
  });

  test('findForwardBlocks skips rules for other interfaces', () => {
    const table = parseIptablesRules('-P FORWARD ACCEPT\n-A FORWARD ! -i br0 -j DROP\n-A FORWARD -o eth0 -j DROP');
    assert.deepEqual(findForwardBlocks([table], 'br0'), []);
  });

  test('findForwardBlocks marks a partial drop as uncertain', () => {
    const table = parseIptablesRules('-P FORWARD ACCEPT\n-A FORWARD -i br0 -p udp -m udp --dport 67 -j DROP\n-A FORWARD -s 10.0.0.0/8 -j DROP');
    const blocks = findForwardBlocks([table], 'br0');
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]?.certain, false);
    assert.equal(blocks[0]?.rule, '-A FORWARD -i br0 -p udp -m udp --dport 67 -j DROP');
  });

  test('findForwardBlocks reads nft jumps, sets and the inet family', () => {
    const ruleset = { nftables: [
      { metainfo: { json_schema_version: 1 } },
      { table: { family: 'inet', name: 'fw' } },
      { chain: { family: 'inet', table: 'fw', name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } },
      { chain: { family: 'inet', table: 'fw', name: 'lan' } },
      { rule: { family: 'inet', table: 'fw', chain: 'forward', handle: 4, expr: [
        { match: { op: '==', left: { meta: { key: 'iifname' } }, right: { set: ['br0', 'br1'] } } }, { jump: { target: 'lan' } }] } },
      { rule: { family: 'inet', table: 'fw', chain: 'lan', handle: 5, expr: [{ counter: { packets: 0, bytes: 0 } }, { drop: null }] } },
      { table: { family: 'bridge', name: 'tapgate' } },
      { chain: { family: 'bridge', table: 'tapgate', name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'drop' } },
    ] };
    const blocks = findForwardBlocks(parseNftRuleset(ruleset), 'br1');
    assert.deepEqual(blocks, [{ tool: 'nft', family: 'inet', table: 'fw', chain: 'forward', by: 'rule', certain: true, rule: 'handle 5: drop' }]);
    assert.deepEqual(findForwardBlocks(parseNftRuleset(ruleset), 'br2'), []);
  });

  test('parseNftRuleset rejects output without nftables', () => {
    assert.throws(() => parseNftRuleset({ other: [] }), /no "nftables" array/);
  });
});

describe('diagnose request', () => {
  const body = (message: unknown): Buffer => Buffer.from(JSON.stringify(message));

  test('parseRequest accepts diagnose with and without a network', () => {
    assert.deepEqual(parseRequest(body({ version: 1, op: 'diagnose' })), { version: 1, op: 'diagnose' });
    assert.deepEqual(parseRequest(body({ version: 1, op: 'diagnose', network: 'lab' })), { version: 1, op: 'diagnose', network: 'lab' });
  });

  test('parseRequest rejects a bad diagnose network', () => {
    assert.throws(() => parseRequest(body({ version: 1, op: 'diagnose', network: '../etc' })), (error: unknown) =>
      error instanceof RequestError && /Invalid bridge or network name "\.\.\/etc"/.test(error.message));
    assert.throws(() => parseRequest(body({ version: 1, op: 'diagnose', command: 'nft' })), /Unsupported argument "command"/);
  });
});

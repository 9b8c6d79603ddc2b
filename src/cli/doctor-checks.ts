// The checks of `tapgate doctor`: pure functions from the daemon's replies to findings, each
// with the exact commands or policy lines that fix it. doctor.ts does the I/O and the printing.

import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { errnoDescription } from '../sys/errors.js';
import type { BridgeFacts, DiagnoseReply, ForwardBlock, TunFacts } from '../protocol/diagnose.js';

export type Severity = 'ok' | 'info' | 'warning' | 'error';

/** One step of a fix: a shell command for root, lines for the policy file, or an instruction. */
export interface FixStep {
  kind: 'command' | 'policy' | 'action';
  text: string;
  /** The policy file that `policy` lines go into. */
  file?: string;
}

/** One way to fix a finding: steps run in order. A finding lists alternatives, best first. */
export interface Fix {
  steps: FixStep[];
}

export interface Finding {
  check: 'daemon' | 'policy' | 'tun' | 'namespace' | 'rule' | 'quota' | 'bridge' | 'mtu' | 'mac' | 'br_netfilter';
  severity: Severity;
  network?: string;
  message: string;
  fixes: Fix[];
}

/** The tun character device is misc major 10, minor 200 (Documentation/admin-guide/devices.txt). */
const MISC_MAJOR = 10;
const TUN_MINOR = 200;
const BR_NETFILTER_SYSCTL = 'net.bridge.bridge-nf-call-iptables';

const command = (text: string): FixStep => ({ kind: 'command', text });
const action = (text: string): FixStep => ({ kind: 'action', text });
const fix = (...steps: FixStep[]): Fix => ({ steps });

/** Exit status of `tapgate doctor`: 1 when a finding blocks VMs, 2 for warnings only, else 0. */
export function exitStatus(findings: Finding[]): number {
  if (findings.some((finding) => finding.severity === 'error')) return 1;
  if (findings.some((finding) => finding.severity === 'warning')) return 2;
  return 0;
}

// --- daemon socket -------------------------------------------------------------------------

export interface SocketProblem {
  path: string;
  /** Whether the path came from $TAPGATE_SOCKET rather than the default. */
  fromEnvironment: boolean;
  /** errno name from connect or the read, or EOF. */
  code: string;
  /** For EACCES: the directory this user may not search, or the socket itself. */
  blocked?: { path: string; directory: boolean };
}

function startFixes(problem: SocketProblem, defaultSocket: string): Fix[] {
  if (problem.path === defaultSocket) return [fix(command('systemctl start tapgate')), fix(command('tapgate daemon'))];
  return [
    fix(command(`tapgate daemon --socket ${problem.path}`)),
    fix(action(`unset TAPGATE_SOCKET to use the default socket ${defaultSocket}`)),
  ];
}

/** Describes why the daemon's socket could not be used. */
export function socketFinding(problem: SocketProblem, defaultSocket: string): Finding {
  const origin = problem.fromEnvironment ? '$TAPGATE_SOCKET' : 'the default';
  const errno = problem.code === 'EOF' ? 'the connection closed without a reply' : `${errnoDescription(problem.code)} (${problem.code})`;
  const base = { check: 'daemon' as const, severity: 'error' as const };
  if (problem.code === 'ENOENT') {
    return { ...base, message: `No daemon socket at ${problem.path} (${origin}): ${errno}. The daemon is not running, or it listens on another path.`, fixes: startFixes(problem, defaultSocket) };
  }
  if (problem.code === 'ECONNREFUSED') {
    return { ...base, message: `Nothing accepts connections on ${problem.path} (${origin}): ${errno}. The daemon stopped without removing its socket; a new daemon replaces it.`, fixes: startFixes(problem, defaultSocket) };
  }
  if (problem.code === 'EACCES' && problem.blocked) {
    const what = problem.blocked.directory ? `search the directory ${problem.blocked.path}` : `write to the socket ${problem.blocked.path}`;
    const repair = problem.blocked.directory ? `chmod a+x ${problem.blocked.path}` : `chmod 0666 ${problem.blocked.path}`;
    return { ...base, message: `This user may not connect to ${problem.path}: ${errno}, because it may not ${what}. The policy, not file modes, should decide who gets taps.`, fixes: [fix(command(repair))] };
  }
  return { ...base, message: `The daemon at ${problem.path} (${origin}) could not be used: ${errno}.`, fixes: [fix(action('see the daemon\'s log: journalctl -u tapgate'))] };
}

// --- /dev/net/tun --------------------------------------------------------------------------

export type TunCause = 'driver-missing' | 'node-missing' | 'wrong-node' | 'not-a-device' | 'permissions' | 'nodev-mount' | 'security-policy' | 'other';

/**
 * Classifies why the daemon could not open /dev/net/tun. ENODEV, ENXIO or ENOENT while /proc/misc
 * does not list tun mean the module is missing; ENODEV from a node whose device number is not
 * the driver's means a wrong node. EACCES or EPERM although the mode bits grant access mean
 * something other than file modes denies it: a nodev mount, an LSM profile (AppArmor, SELinux),
 * a device cgroup (systemd DeviceAllow=) or seccomp.
 */
export function classifyTunFailure(tun: Extract<TunFacts, { ok: false }>): { cause: TunCause; hint: string; fixes: Fix[] } {
  const { code, path } = tun;
  const minor = tun.driverMinor ?? TUN_MINOR;
  const createNode = `mkdir -p ${dirname(path)} && mknod -m 0666 ${path} c ${MISC_MAJOR} ${minor}`;
  const wrongNode = tun.driverRegistered === true && tun.device !== null &&
    (tun.device.major !== MISC_MAJOR || tun.device.minor !== minor);

  if ((code === 'ENODEV' || code === 'ENXIO') && wrongNode) {
    const device = `${tun.device!.major}:${tun.device!.minor}`;
    return { cause: 'wrong-node', hint: `${path} is device ${device}, but the tun driver is ${MISC_MAJOR}:${minor}`, fixes: [fix(command(`rm -f ${path} && ${createNode}`))] };
  }

  if (code === 'ENODEV' || code === 'ENXIO' || (code === 'ENOENT' && tun.driverRegistered !== true)) {
    return { cause: 'driver-missing', hint: 'tun module not available', fixes: [fix(command('modprobe tun')), fix(action('reboot, if the kernel was upgraded since boot and its modules are gone'))] };
  }

  if (code === 'ENOENT') {
    return { cause: 'node-missing', hint: `the tun driver is loaded but ${path} does not exist`, fixes: [fix(command(createNode))] };
  }

  if (tun.characterDevice === false || code === 'ENOTTY') {
    return { cause: 'not-a-device', hint: `${path} is not the tun character device`, fixes: [fix(command(`rm -f ${path} && ${createNode}`))] };
  }

  if ((code === 'EACCES' || code === 'EPERM') && tun.modeAllowsDaemon === false) {
    const mode = tun.mode === null ? 'unknown' : `0${tun.mode.toString(8)}`;
    return { cause: 'permissions', hint: `its mode ${mode} does not let the daemon read and write it`, fixes: [fix(command(`chmod 0666 ${path}`))] };
  }

  if ((code === 'EACCES' || code === 'EPERM') && tun.mount?.nodev) {
    return { cause: 'nodev-mount', hint: `blocked by security policy or sandbox: ${tun.mount.point} is mounted nodev, which forbids opening device nodes`, fixes: [fix(command(`mount -o remount,dev ${tun.mount.point}`))] };
  }

  if (code === 'EACCES' || code === 'EPERM') {
    return {
      cause: 'security-policy',
      hint: 'blocked by security policy or sandbox: the mode bits allow access, so an LSM profile, a device cgroup or seccomp denies it',
      fixes: [
        fix(action(`allow "${path} rw," in the daemon's AppArmor profile, or the matching SELinux rule (see: ausearch -m avc)`)),
        fix(action(`add DeviceAllow=${path} rw to the daemon's systemd unit and remove PrivateDevices=yes`)),
      ],
    };
  }
  return { cause: 'other', hint: `opening ${path} failed`, fixes: [fix(action('see the daemon\'s log: journalctl -u tapgate'))] };
}

export function tunFinding(tun: TunFacts): Finding {
  if (tun.ok) return { check: 'tun', severity: 'ok', message: `the daemon can create taps through ${tun.path}`, fixes: [] };
  const { hint, fixes } = classifyTunFailure(tun);
  const message = `The daemon cannot open ${tun.path}: ${errnoDescription(tun.code)} (${tun.code}); ${hint}. No VM can get a tap until this is fixed.`;
  return { check: 'tun', severity: 'error', message, fixes };
}

// --- policy: rules and quotas --------------------------------------------------------------

/**
 * Reports a reload that failed while a valid policy stays in force: the daemon still works, but
 * on an older policy than the file contains. Returns undefined when the last reload succeeded.
 */
export function reloadFailureFinding(
  policy: { path: string; valid: boolean; loadedAt?: string | null; lastReloadFailure?: { at: string; error: string } | null },
  daemonPid: number,
): Finding | undefined {
  const failure = policy.lastReloadFailure;
  if (!failure || !policy.valid) return undefined;
  const since = policy.loadedAt ? ` loaded at ${policy.loadedAt}` : '';
  return {
    check: 'policy', severity: 'warning',
    message: `The last reload of ${policy.path}, at ${failure.at}, failed, so the policy${since} stays in force: ${failure.error}`,
    fixes: [fix(action(`correct ${policy.path} as the message says; "tapgate policy check ${policy.path}" lists every problem`), reloadStep(daemonPid))],
  };
}

export interface CheckReply {
  allowed: boolean;
  reason: string;
  rule: string | null;
  limits: { maxTaps: number } | null;
  inUse: number;
}

/** Returns the [[allow]] table that would let `user` use `network`. */
export function allowSnippet(user: string, network: string): string {
  return `[[allow]]\nusers = ["${user}"]\nnetworks = ["${network}"]`;
}

/** Reload instructions; SIGHUP makes the daemon read its policy again. */
function reloadStep(daemonPid: number): FixStep {
  return command(`kill -HUP ${daemonPid}`);
}

/**
 * Reports whether the user may use `network`. `blocking` is true when a denial blocks this run:
 * for the network named with --network, or when the user may use no network at all.
 */
export function ruleFinding(network: string, check: CheckReply, context: { user: string; policyPath: string; daemonPid: number; blocking: boolean }): Finding {
  if (check.allowed) return { check: 'rule', severity: 'ok', network, message: check.reason, fixes: [] };
  const severity: Severity = context.blocking ? 'error' : 'info';
  if (check.rule) {
    const ruleAt = check.rule.replace(/^deny rule( "[^"]*")? at /, '');
    return { check: 'rule', severity, network, message: check.reason, fixes: [fix(action(`remove or narrow the deny rule at ${ruleAt}; a matching deny rule wins over every allow rule`), reloadStep(context.daemonPid))] };
  }
  const snippet: FixStep = { kind: 'policy', text: allowSnippet(context.user, network), file: context.policyPath };
  return { check: 'rule', severity, network, message: check.reason, fixes: [fix(snippet, reloadStep(context.daemonPid))] };
}

export function quotaFinding(network: string, check: CheckReply, daemonPid: number): Finding | undefined {
  if (!check.allowed || !check.limits) return undefined;
  const { maxTaps } = check.limits;
  const usage = `${check.inUse} of ${maxTaps} taps in use`;
  if (check.inUse < maxTaps) return { check: 'quota', severity: 'ok', network, message: `${usage} on network ${network}`, fixes: [] };
  const ruleAt = (check.rule ?? 'the allow rule').replace(/^allow rule( "[^"]*")? at /, '');
  return {
    check: 'quota', severity: 'error', network,
    message: `Tap quota reached on network ${network}: ${usage} (max_taps of the ${check.rule ?? 'allow rule'}); a new VM on it is rejected.`,
    fixes: [
      ...(check.inUse > 0 ? [fix(action(`stop a VM that uses one of your taps on ${network}; "tapgate status" lists them`))] : []),
      fix(action(`raise max_taps in the allow rule at ${ruleAt}, for example max_taps = ${check.inUse + 1}`), reloadStep(daemonPid)),
    ],
  };
}

// --- bridges -------------------------------------------------------------------------------

type ExistingBridge = Extract<BridgeFacts, { exists: true }>;

/** Reports a missing bridge or another kind of device in its place; undefined when it is a bridge. */
export function bridgeFinding(network: { name: string; bridge: string; source: string }, link: BridgeFacts): Finding | undefined {
  const { name, bridge, source } = network;
  const create = [command(`ip link add ${bridge} type bridge`), command(`ip link set ${bridge} up`)];
  if (!link.exists) {
    return {
      check: 'bridge', severity: 'error', network: name,
      message: `Bridge ${bridge} of network ${name} does not exist in the daemon's network namespace; every request for this network fails.`,
      fixes: [fix(...create), fix(action(`point network ${name} at an existing bridge: bridge = "NAME" at ${source}`))],
    };
  }
  if (link.kind !== 'bridge') {
    const kind = link.kind ? `a ${link.kind} device` : 'a device without a link kind (a physical NIC, say)';
    return {
      check: 'bridge', severity: 'error', network: name,
      message: `Interface ${bridge} of network ${name} is ${kind}, not a bridge; every request for this network fails.`,
      fixes: [fix(action(`point network ${name} at a bridge: bridge = "NAME" at ${source}`)), fix(command(`ip link del ${bridge}`), ...create)],
    };
  }
  if (!link.up) {
    return { check: 'bridge', severity: 'warning', network: name, message: `Bridge ${bridge} of network ${name} is down; its VMs get no traffic.`, fixes: [fix(command(`ip link set ${bridge} up`))] };
  }
  return undefined;
}

/**
 * Reports ports whose MTU differs from the bridge's. An unpinned bridge follows its smallest
 * port, so one 1500-byte port drops a jumbo bridge to 1500; a port below the bridge MTU drops
 * larger frames. The target is the bridge MTU when the bridge is evidently pinned (its MTU is
 * not its smallest port's), else the largest port MTU. Setting the bridge first pins it.
 */
export function mtuFinding(network: string, bridge: string, link: ExistingBridge): Finding | undefined {
  if (link.ports.length === 0) return undefined;
  const mtus = link.ports.map((port) => port.mtu);
  const smallest = Math.min(...mtus);
  const target = link.mtu !== smallest ? link.mtu : Math.max(...mtus);
  const differing = link.ports.filter((port) => port.mtu !== link.mtu);
  if (differing.length === 0) {
    if (link.mtu <= 1500) return undefined;
    return {
      check: 'mtu', severity: 'info', network,
      message: `Bridge ${bridge} has MTU ${link.mtu}, equal to its smallest port. The kernel does not report whether that MTU was set explicitly; if it was not, a port of MTU 1500 added by other software lowers the whole bridge (tapgate's taps take the bridge MTU and do not).`,
      fixes: [fix(command(`ip link set dev ${bridge} mtu ${link.mtu - 1}`), command(`ip link set dev ${bridge} mtu ${link.mtu}`))],
    };
  }
  const list = link.ports.map((port) => `${port.name} ${port.mtu}`).join(', ');
  const steps = [
    ...(link.mtu !== target ? [command(`ip link set dev ${bridge} mtu ${target}`)] : []),
    ...link.ports.filter((port) => port.mtu !== target).map((port) => command(`ip link set dev ${port.name} mtu ${target}`)),
  ];
  return {
    check: 'mtu', severity: 'warning', network,
    message: `Bridge ${bridge} has MTU ${link.mtu} but its ports differ (${list}); frames larger than the smallest MTU are dropped, and the bridge may have been pulled down to its smallest port.`,
    fixes: [fix(...steps)],
  };
}

/** tapgate's host-side tap MAC; a bridge must never be pinned to it. */
const TAP_HOST_MAC = 'fe:ff:ff:ff:ff:ff';

/**
 * Returns the address to pin a bridge to: its current one when that is a real port's address,
 * else a locally administered unicast address derived from the bridge name, so the command can
 * be run as printed. A bridge with no ports reports all zeros, which the kernel rejects, and one
 * whose only ports are taps reports tapgate's tap MAC.
 */
export function pinnedBridgeMac(bridge: string, current: string): string {
  if (current !== '00:00:00:00:00:00' && current !== TAP_HOST_MAC) return current;
  const digest = createHash('sha256').update(bridge).digest();
  return ['02', ...[...digest.subarray(0, 5)].map((byte) => byte.toString(16).padStart(2, '0'))].join(':');
}

export function macFinding(network: string, bridge: string, link: ExistingBridge, netAddrSet: number): Finding | undefined {
  if (link.addressAssignType === null || link.addressAssignType === netAddrSet || !link.address) return undefined;
  return {
    check: 'mac', severity: 'warning', network,
    message: `Bridge ${bridge} has no fixed MAC address (addr_assign_type ${link.addressAssignType}, not ${netAddrSet}): the kernel gives it the lowest MAC of its ports, so it changes when ports are added or removed and neighbours' ARP caches go stale.`,
    fixes: [fix(command(`ip link set dev ${bridge} address ${pinnedBridgeMac(bridge, link.address)}`))],
  };
}

// --- br_netfilter and FORWARD --------------------------------------------------------------

function describeChain(block: ForwardBlock): string {
  const where = block.tool === 'iptables' ? `iptables chain ${block.chain} (table ${block.table})` : `nft chain ${block.family} ${block.table} ${block.chain}`;
  if (block.by === 'policy') return `${where} with policy drop`;
  return `${where}, ${block.certain ? '' : 'possibly, '}rule ${block.rule}`;
}

function acceptCommand(block: ForwardBlock, bridge: string): string {
  if (block.tool === 'iptables') return 'iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT';
  return `nft insert rule ${block.family} ${block.table} ${block.chain} iifname "${bridge}" oifname "${bridge}" accept`;
}

/**
 * Warns when br_netfilter hands the bridge's IPv4 frames to a FORWARD chain that drops them.
 * tapgate never changes these settings itself; the fixes are for the administrator.
 */
export function forwardFinding(network: string, bridge: string, link: ExistingBridge, facts: Pick<DiagnoseReply, 'brNetfilter' | 'firewall'>, blocks: ForwardBlock[]): Finding | undefined {
  const viaSysctl = facts.brNetfilter.callIptables === 1;
  const viaBridge = link.nfCallIptables === 1;
  if (!facts.brNetfilter.loaded || (!viaSysctl && !viaBridge)) return undefined;
  const setting = [viaSysctl ? `${BR_NETFILTER_SYSCTL}=1` : '', viaBridge ? `${bridge}'s own nf_call_iptables=1` : ''].filter(Boolean).join(' and ');
  if (blocks.length === 0) {
    const unlisted = (['nft', 'iptables'] as const).filter((tool) => facts.firewall[tool].state === 'failed');
    if (unlisted.length === 0) return undefined;
    const details = unlisted.map((tool) => facts.firewall[tool].detail).join('; ');
    return { check: 'br_netfilter', severity: 'warning', network, message: `Bridge ${bridge}'s IPv4 frames pass the FORWARD chains (${setting}), but the daemon could not list them all: ${details}`, fixes: [] };
  }

  const accept = [...new Set(blocks.map((block) => acceptCommand(block, bridge)))].map(command);
  const disable = [
    ...(viaSysctl ? [command(`sysctl -w ${BR_NETFILTER_SYSCTL}=0`)] : []),
    ...(viaBridge ? [command(`ip link set dev ${bridge} type bridge nf_call_iptables 0`)] : []),
  ];
  const certain = blocks.some((block) => block.certain);
  return {
    check: 'br_netfilter', severity: 'warning', network,
    message: `Bridge ${bridge}: ${setting} sends its bridged IPv4 frames (DHCP included) through FORWARD, and ${blocks.map(describeChain).join('; ')} ` +
      `${certain ? 'drops them' : 'may drop some of them'}. VMs on ${bridge} get no traffic${certain ? '' : ' of that kind'}; tapgate does not change this itself. ` +
      `Either accept bridged frames, or stop passing them to iptables${viaSysctl ? ` (the sysctl applies to every bridge in the daemon's network namespace)` : ''}.`,
    fixes: [fix(...accept), fix(...disable)],
  };
}

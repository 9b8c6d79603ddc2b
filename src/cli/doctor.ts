// `tapgate doctor`: requests status, check and diagnose from the daemon, runs the checks of
// doctor-checks.ts for the calling user and prints each finding with the commands that fix it.
//
// The command needs no privileges. Facts that need privileges or live in the daemon's
// namespaces (the firewall, the bridges, /dev/net/tun) come from the daemon's `diagnose` reply.

import { parseArgs } from 'node:util';
import { accessSync, constants, readlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { call, DaemonUnreachableError } from '../client/client.js';
import { clientSocketPath, DEFAULT_SOCKET } from '../protocol/paths.js';
import type { Reply } from '../protocol/messages.js';
import { interfaceNameProblem } from '../protocol/names.js';
import { NET_ADDR_SET, type DiagnoseReply } from '../protocol/diagnose.js';
import {
  bridgeFinding, exitStatus, forwardFinding, macFinding, mtuFinding, quotaFinding, reloadFailureFinding, ruleFinding, socketFinding, tunFinding,
  type CheckReply, type Finding, type FixStep, type SocketProblem,
} from './doctor-checks.js';

export const DOCTOR_USAGE = `Usage: tapgate doctor [--network NAME] [--json]

Checks, for the calling user, what a VM's network needs: the daemon's socket, /dev/net/tun,
the policy rule and tap quota of each network, its bridge (existence, MTUs, MAC address), and
br_netfilter passing bridged frames to FORWARD chains that drop them. Each problem is printed
with the commands or policy lines that fix it; those are for an administrator (root) in the
daemon's namespaces. The command itself needs no privileges.

Options:
  --network NAME   check only this network (a network or bridge name)
  --json           print the findings as JSON
  --help           print this help

Exit status: 0 when all is well, 1 when something blocks VMs, 2 when there are warnings only.
`;

interface StatusReply {
  pid: number;
  policy: { path: string; valid: boolean; error?: string; warnings?: string[]; loadedAt?: string | null; lastReloadFailure?: { at: string; error: string } | null };
}

interface Caller {
  name: string;
  uid: number;
}

export interface DoctorReport {
  user: Caller;
  socket: { path: string; fromEnvironment: boolean };
  findings: Finding[];
  exitStatus: number;
}

function currentUser(): Caller {
  const uid = process.getuid?.() ?? -1;
  try {
    return { name: userInfo().username, uid };
  } catch {
    return { name: String(uid), uid };
  }
}

/** Finds the first directory above `path` this user may not search, or the socket if it may not write it. */
function blockedComponent(path: string): SocketProblem['blocked'] {
  const directories: string[] = [];
  for (let directory = dirname(path); ; directory = dirname(directory)) {
    directories.unshift(directory);
    if (directory === dirname(directory)) break;
  }
  for (const directory of directories) {
    try {
      accessSync(directory, constants.X_OK);
    } catch {
      return { path: directory, directory: true };
    }
  }
  try {
    accessSync(path, constants.W_OK);
  } catch {
    return { path, directory: false };
  }
  return undefined;
}

function readNamespace(kind: 'net' | 'mnt'): string | null {
  try {
    return readlinkSync(`/proc/self/ns/${kind}`);
  } catch {
    return null;
  }
}

function policyFindings(status: StatusReply): Finding[] {
  const { path, valid, error, warnings = [] } = status.policy;
  if (!valid) {
    return [{
      check: 'policy', severity: 'error', message: `The policy is invalid, so the daemon denies every request: ${error ?? path}`,
      fixes: [{ steps: [{ kind: 'action', text: `correct ${path} as the message says` }, { kind: 'command', text: `kill -HUP ${status.pid}` }] }],
    }];
  }
  const reloadFailure = reloadFailureFinding(status.policy, status.pid);
  return [
    { check: 'policy', severity: 'ok', message: `${path} is valid`, fixes: [] },
    ...(reloadFailure ? [reloadFailure] : []),
    ...warnings.map((warning): Finding => ({ check: 'policy', severity: 'warning', message: warning, fixes: [] })),
  ];
}

function unknownNetworkFinding(network: string, reason: string, status: StatusReply): Finding {
  const bridge = 'BRIDGE';
  return {
    check: 'rule', severity: 'error', network, message: reason,
    fixes: [{ steps: [
      { kind: 'policy', file: status.policy.path, text: `[networks.${network}]\nbridge = "${bridge}"` },
      { kind: 'command', text: `kill -HUP ${status.pid}` },
    ] }],
  };
}

/** Runs the checks of every network in the diagnose reply. */
function networkFindings(socket: string, diagnosis: DiagnoseReply, status: StatusReply, user: Caller, requested: string | undefined): Finding[] {
  const checks = diagnosis.networks.map((network) => {
    const { reply } = call({ op: 'check', network: network.name }, socket);
    return reply.ok ? (reply as unknown as CheckReply) : undefined;
  });
  const blocking = requested !== undefined || !checks.some((check) => check?.allowed);
  const findings: Finding[] = [];
  diagnosis.networks.forEach((network, index) => {
    const check = checks[index];
    if (!check) return;
    findings.push(ruleFinding(network.name, check, { user: user.name, policyPath: status.policy.path, daemonPid: status.pid, blocking }));
    const quota = quotaFinding(network.name, check, status.pid);
    if (quota) findings.push(quota);
    if (!check.allowed || !network.checked) return;

    const problem = bridgeFinding(network, network.link);
    if (problem) findings.push(problem);
    if (!network.link.exists || network.link.kind !== 'bridge') return;
    const link = network.link;
    for (const finding of [
      mtuFinding(network.name, network.bridge, link),
      macFinding(network.name, network.bridge, link, NET_ADDR_SET),
      forwardFinding(network.name, network.bridge, link, diagnosis, network.forward),
    ]) if (finding) findings.push(finding);
  });
  if (diagnosis.networks.length === 0 && status.policy.valid) {
    findings.push({ check: 'rule', severity: 'error', message: `${status.policy.path} defines no network`, fixes: [{ steps: [
      { kind: 'policy', file: status.policy.path, text: '[networks.NAME]\nbridge = "BRIDGE"' },
      { kind: 'command', text: `kill -HUP ${status.pid}` },
    ] }] });
  }
  return findings;
}

/** Notes where to run the fixes when the daemon lives in other namespaces than this shell. */
function namespaceFindings(diagnosis: DiagnoseReply, findings: Finding[]): Finding[] {
  const notes: Finding[] = [];
  const needsFix = (checks: Finding['check'][]): boolean => findings.some((finding) => checks.includes(finding.check) && finding.fixes.length > 0 && finding.severity !== 'ok');
  const own = { net: readNamespace('net'), mnt: readNamespace('mnt') };
  const pid = diagnosis.daemon.pid;
  if (diagnosis.daemon.netns && own.net && diagnosis.daemon.netns !== own.net && needsFix(['bridge', 'mtu', 'mac', 'br_netfilter'])) {
    notes.push({ check: 'namespace', severity: 'info', message: `The daemon runs in network namespace ${diagnosis.daemon.netns}, this shell in ${own.net}: run the ip, nft, iptables and sysctl commands below in the daemon's, for example with nsenter --target ${pid} --net -- COMMAND`, fixes: [] });
  }
  if (diagnosis.daemon.mntns && own.mnt && diagnosis.daemon.mntns !== own.mnt && needsFix(['tun'])) {
    notes.push({ check: 'namespace', severity: 'info', message: `The daemon runs in mount namespace ${diagnosis.daemon.mntns}, this shell in ${own.mnt}: run the /dev/net/tun commands below in the daemon's, for example with nsenter --target ${pid} --mount -- COMMAND`, fixes: [] });
  }
  return notes;
}

function replyError(reply: Reply): { code: string; message: string } | undefined {
  return reply.ok ? undefined : reply.error;
}

/** Runs every check against the daemon and returns the findings, or only the socket problem when the daemon cannot be reached. */
export function diagnoseCaller(requested: string | undefined, socket = clientSocketPath()): DoctorReport {
  const user = currentUser();
  const fromEnvironment = Boolean(process.env.TAPGATE_SOCKET);
  const report = (findings: Finding[]): DoctorReport => ({ user, socket: { path: socket, fromEnvironment }, findings, exitStatus: exitStatus(findings) });
  try {
    const status = call({ op: 'status' }, socket).reply;
    const statusError = replyError(status);
    if (statusError) return report([{ check: 'daemon', severity: 'error', message: `The daemon at ${socket} returned an error for "status": ${statusError.message}`, fixes: [] }]);
    const statusReply = status as unknown as StatusReply;
    const findings: Finding[] = [{ check: 'daemon', severity: 'ok', message: `daemon pid ${statusReply.pid} replies on ${socket}`, fixes: [] }, ...policyFindings(statusReply)];

    const diagnosis = call(requested === undefined ? { op: 'diagnose' } : { op: 'diagnose', network: requested }, socket).reply;
    const diagnoseError = replyError(diagnosis);
    if (diagnoseError?.code === 'unknown-network') return report([...findings, unknownNetworkFinding(requested ?? '', diagnoseError.message, statusReply)]);
    if (diagnoseError) {
      findings.push({ check: 'daemon', severity: 'error', message: `The daemon rejected the "diagnose" request: ${diagnoseError.message}. A daemon started before tapgate doctor was installed needs a restart.`, fixes: [{ steps: [{ kind: 'command', text: 'systemctl restart tapgate' }] }] });
      return report(findings);
    }
    const facts = diagnosis as unknown as DiagnoseReply;
    const checks = [tunFinding(facts.tun), ...networkFindings(socket, facts, statusReply, user, requested)];
    return report([...findings, ...namespaceFindings(facts, checks), ...checks]);
  } catch (error) {
    if (!(error instanceof DaemonUnreachableError)) throw error;
    const absolute = resolve(socket);
    const problem: SocketProblem = { path: absolute, fromEnvironment, code: error.code };
    if (error.code === 'EACCES') problem.blocked = blockedComponent(absolute);
    return report([socketFinding(problem, DEFAULT_SOCKET)]);
  }
}

const LABELS: Record<Finding['severity'], string> = { ok: 'ok', info: 'info', warning: 'WARNING', error: 'ERROR' };
const INDENT = ' '.repeat(10);

function renderStep(step: FixStep): string[] {
  if (step.kind !== 'policy') return [step.text];
  return [`add to ${step.file ?? 'the policy file'}:`, ...step.text.split('\n').map((line) => `    ${line}`)];
}

/** Formats a report for a terminal: one line per finding, its fixes indented below. */
export function renderReport(report: DoctorReport): string {
  const origin = report.socket.fromEnvironment ? ' (from $TAPGATE_SOCKET)' : '';
  const lines = [`tapgate doctor for user ${report.user.name} (uid ${report.user.uid}), daemon socket ${report.socket.path}${origin}`];
  for (const finding of report.findings) {
    lines.push(`${LABELS[finding.severity].padEnd(8)}  ${finding.check.padEnd(12)}  ${finding.message}`);
    finding.fixes.forEach((fix, index) => {
      const label = index === 0 ? 'fix:' : 'or:';
      fix.steps.flatMap(renderStep).forEach((text, line) => lines.push(`${INDENT}${(line === 0 ? label : '').padEnd(5)} ${text}`));
    });
  }
  const count = (severity: Finding['severity']): number => report.findings.filter((finding) => finding.severity === severity).length;
  lines.push(`${count('error')} error(s), ${count('warning')} warning(s); exit status ${report.exitStatus} (0: all well, 1: something blocks VMs, 2: warnings only)`);
  return `${lines.join('\n')}\n`;
}

export function doctorCommand(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { network: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } }, strict: true });
  if (values.help) {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  const problem = values.network === undefined ? undefined : interfaceNameProblem(values.network);
  if (problem) {
    process.stderr.write(`tapgate: invalid --network ${JSON.stringify(values.network)}: ${problem}\n`);
    return 1;
  }
  const report = diagnoseCaller(values.network);
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderReport(report));
  return report.exitStatus;
}

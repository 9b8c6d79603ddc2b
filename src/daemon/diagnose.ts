// The `diagnose` operation: facts about /dev/net/tun, the networks' bridges, br_netfilter and
// the FORWARD chains, gathered in the daemon's own namespaces for `tapgate doctor`.
//
// `tapgate doctor` runs unprivileged and possibly in another network or mount namespace, so it
// cannot see these itself: listing the firewall needs CAP_NET_ADMIN, and the bridges and
// /proc/sys/net/bridge are per network namespace. The daemon only reads here. It runs `nft` and
// `iptables` with fixed arguments, never with text from the request, and a missing tool is
// reported as missing, not as an error.

import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, readlinkSync, statSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { SystemError } from '../sys/errors.js';
import { tunFeatures, TUN_PATH } from '../sys/tun.js';
import { IFF_UP } from '../sys/constants.js';
import type { Link, RtnlSocket } from '../sys/rtnl.js';
import { decide } from '../policy/decide.js';
import type { Identity, Network, Policy } from '../policy/types.js';
import type { Logger } from './log.js';
import { PROTOCOL_VERSION, RequestError } from '../protocol/messages.js';
import type { BridgeFacts, DiagnoseReply, NetworkFacts, ToolFacts, TunFacts } from '../protocol/diagnose.js';
import { findForwardBlocks, parseIptablesRules, parseNftRuleset, type ParsedTable } from './firewall.js';

export interface DiagnoseContext {
  /** The policy in force, or undefined while it is invalid. */
  policy: Policy | undefined;
  rtnl: RtnlSocket;
  logger: Logger;
}

/** Fixed places to look for nft and iptables; the daemon's $PATH is not consulted. */
const TOOL_DIRECTORIES = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
const TOOL_TIMEOUT_MS = 3000;
const TOOL_OUTPUT_LIMIT = 16 * 1024 * 1024;
/**
 * Share of the daemon's time that firewall listings may take. Each listing spawns up to three
 * processes (a few milliseconds in all), and no other request is served meanwhile. So after a
 * listing that took T ms, replies reuse it for T * (1 / share - 1) ms. A client repeating
 * `diagnose` thus delays other requests by at most one listing at a time.
 */
const LISTING_TIME_SHARE = 0.25;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function readInteger(path: string): number | null {
  const text = readText(path)?.trim();
  return text === undefined || !/^-?\d+$/.test(text) ? null : Number(text);
}

function readLinkOrNull(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

// --- /dev/net/tun --------------------------------------------------------------------------

function modeAllowsDaemon(node: BigIntStats): boolean {
  const uid = BigInt(process.geteuid?.() ?? -1);
  const gids = [process.getegid?.() ?? -1, ...(process.getgroups?.() ?? [])].map(BigInt);
  const bits = node.uid === uid ? node.mode >> 6n : gids.includes(node.gid) ? node.mode >> 3n : node.mode;
  return (bits & 0o6n) === 0o6n;
}

/** Splits a dev_t as glibc's major() and minor() do. */
function deviceNumber(rdev: bigint): { major: number; minor: number } {
  return {
    major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

/** Unescapes the octal sequences (`\040` for a space) that /proc/self/mountinfo uses in paths. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Finds the mount that contains `path`: the longest mount point above it, the later one on a tie. */
function mountOf(path: string): { point: string; nodev: boolean } | null {
  let best: { point: string; nodev: boolean } | null = null;
  for (const line of (readText('/proc/self/mountinfo') ?? '').split('\n')) {
    // Fields: ID PARENT MAJOR:MINOR ROOT MOUNT-POINT MOUNT-OPTIONS ... (proc_pid_mountinfo(5)).
    const fields = line.split(' ');
    if (fields.length < 6) continue;
    const point = unescapeMountPath(fields[4]!);
    const contains = point === '/' || path === point || path.startsWith(`${point}/`);
    if (contains && (!best || point.length >= best.point.length)) {
      best = { point, nodev: fields[5]!.split(',').includes('nodev') };
    }
  }
  return best;
}

/** Opens /dev/net/tun as the daemon does before each tap and, on failure, records why. */
function tunFacts(): TunFacts {
  try {
    tunFeatures();
    return { ok: true, path: TUN_PATH };
  } catch (error) {
    if (!(error instanceof SystemError)) throw error;
    let node: BigIntStats | undefined;
    try {
      node = statSync(TUN_PATH, { bigint: true });
    } catch {
      node = undefined;
    }
    const misc = readText('/proc/misc');
    const minor = misc === undefined ? undefined : /^\s*(\d+)\s+tun$/m.exec(misc)?.[1];
    return {
      ok: false, path: TUN_PATH, code: error.code, message: error.message,
      mode: node ? Number(node.mode & 0o7777n) : null,
      characterDevice: node ? node.isCharacterDevice() : null,
      modeAllowsDaemon: node ? modeAllowsDaemon(node) : null,
      device: node ? deviceNumber(node.rdev) : null,
      driverRegistered: misc === undefined ? null : minor !== undefined,
      driverMinor: minor === undefined ? null : Number(minor),
      mount: mountOf(TUN_PATH),
    };
  }
}

// --- firewall listings ---------------------------------------------------------------------

function findTool(name: string): string | undefined {
  for (const directory of TOOL_DIRECTORIES) {
    const path = join(directory, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

function runTool(path: string, args: string[]): { ok: true; stdout: string } | { ok: false; detail: string } {
  const result = spawnSync(path, args, {
    encoding: 'utf8', timeout: TOOL_TIMEOUT_MS, maxBuffer: TOOL_OUTPUT_LIMIT, stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: TOOL_DIRECTORIES.join(':'), LC_ALL: 'C' },
  });
  const command = `${path} ${args.join(' ')}`;
  if (result.error) return { ok: false, detail: `${command} failed: ${result.error.message}` };
  if (result.status !== 0) return { ok: false, detail: `${command} exited with status ${result.status ?? result.signal}: ${result.stderr.trim().split('\n')[0] ?? ''}` };
  return { ok: true, stdout: result.stdout };
}

interface Listing {
  nft: ToolFacts;
  iptables: ToolFacts;
  tables: ParsedTable[];
}

function listIptables(): { facts: ToolFacts; table?: ParsedTable; nfTables: boolean } {
  const path = findTool('iptables');
  if (!path) return { facts: { state: 'missing' }, nfTables: false };
  const version = runTool(path, ['-V']);
  const nfTables = version.ok && version.stdout.includes('nf_tables');
  const listing = runTool(path, ['-S']);
  if (!listing.ok) return { facts: { state: 'failed', detail: listing.detail }, nfTables };
  // iptables-nft prints this comment and default policies when native nft chains share its table.
  // Those policies are not the real ones, so the nft listing is used instead.
  const comment = listing.stdout.split('\n').find((line) => line.startsWith('#'));
  if (comment) return { facts: { state: 'failed', detail: `${path} -S: ${comment.replace(/^#\s*/, '')}` }, nfTables };
  return { facts: { state: 'listed' }, table: parseIptablesRules(listing.stdout), nfTables };
}

function listNft(skipIptablesForward: boolean): { facts: ToolFacts; tables: ParsedTable[] } {
  const path = findTool('nft');
  if (!path) return { facts: { state: 'missing' }, tables: [] };
  const listing = runTool(path, ['-j', 'list', 'ruleset']);
  if (!listing.ok) return { facts: { state: 'failed', detail: listing.detail }, tables: [] };
  // iptables-nft keeps its FORWARD chain in table ip filter. nft's JSON only names its matches
  // ("xt" expressions) while `iptables -S` shows them, so that chain is read from iptables.
  const skip = (family: string, table: string, chain: string): boolean =>
    skipIptablesForward && family === 'ip' && table === 'filter' && chain === 'FORWARD';
  try {
    return { facts: { state: 'listed' }, tables: parseNftRuleset(JSON.parse(listing.stdout), skip) };
  } catch (error) {
    return { facts: { state: 'failed', detail: `${path} -j list ruleset printed unreadable JSON: ${String(error)}` }, tables: [] };
  }
}

let lastListing: Listing | undefined;
let nextListingAt = 0;
let lastFailure = '';

/** Logs a failed listing once per distinct failure, because clients trigger listings at will. */
function logFailures(listing: Listing, logger: Logger): void {
  const failures = (['nft', 'iptables'] as const).filter((tool) => listing[tool].state === 'failed').map((tool) => `${tool}: ${listing[tool].detail ?? ''}`);
  const summary = failures.join('; ');
  if (summary && summary !== lastFailure) logger.log('warn', 'Listing the firewall for diagnose failed', { error: summary });
  lastFailure = summary;
}

/** Lists the firewall, or reuses the last listing while LISTING_TIME_SHARE would be exceeded. */
function listFirewall(logger: Logger): Listing {
  const start = Date.now();
  if (lastListing && start < nextListingAt) return lastListing;

  const iptables = listIptables();
  const nft = listNft(iptables.table !== undefined && iptables.nfTables);
  const tables = iptables.table ? [...nft.tables, iptables.table] : nft.tables;
  // iptables-nft keeps its rules in nf_tables, so the nft listing already contains what it failed to show.
  const iptablesFacts: ToolFacts = iptables.facts.state === 'failed' && iptables.nfTables && nft.facts.state === 'listed'
    ? { state: 'skipped', detail: `read from the nft listing instead: ${iptables.facts.detail ?? ''}` }
    : iptables.facts;
  lastListing = { nft: nft.facts, iptables: iptablesFacts, tables };
  logFailures(lastListing, logger);
  const end = Date.now();
  nextListingAt = end + (end - start) * (1 / LISTING_TIME_SHARE - 1);
  return lastListing;
}

// --- bridges -------------------------------------------------------------------------------

/** Reads an integer from /sys/class/net/NAME/, or null when sysfs there shows another namespace's device. */
function readSysfsInteger(link: Link, attribute: string): number | null {
  const directory = `/sys/class/net/${link.name}`;
  if (readInteger(`${directory}/ifindex`) !== link.index) return null;
  return readInteger(`${directory}/${attribute}`);
}

function bridgeFacts(links: Link[], name: string): BridgeFacts {
  const link = links.find((candidate) => candidate.name === name);
  if (!link) return { exists: false };
  const ports = links
    .filter((candidate) => candidate.master === link.index)
    .map((port) => ({ name: port.name, mtu: port.mtu ?? 0, kind: port.kind ?? null }));
  return {
    exists: true,
    kind: link.kind ?? null,
    up: (link.flags & IFF_UP) !== 0,
    mtu: link.mtu ?? 0,
    address: link.address ?? null,
    addressAssignType: readSysfsInteger(link, 'addr_assign_type'),
    nfCallIptables: link.kind === 'bridge' ? readSysfsInteger(link, 'bridge/nf_call_iptables') : null,
    ports,
  };
}

function selectNetworks(policy: Policy | undefined, identity: Identity, requested: string | undefined): Network[] {
  if (!policy) return [];
  if (requested === undefined) return [...policy.networks.values()];
  const decision = decide(policy, identity, requested);
  if (decision.code === 'unknown-network' || !decision.network) throw new RequestError(decision.reason, 'unknown-network');
  return [decision.network];
}

/**
 * Gathers the facts of a `diagnose` reply for `identity`. Bridge and FORWARD facts are included
 * only for networks the policy allows the caller (root gets all), so the reply reveals no more
 * of the firewall than the caller's own VMs depend on.
 * @param requested a network or bridge name, or undefined for every network.
 * @throws RequestError with code 'unknown-network' when `requested` names no network.
 * Privilege: reading the firewall needs CAP_NET_ADMIN in the daemon's network namespace.
 */
export function diagnose(context: DiagnoseContext, identity: Identity, requested: string | undefined): DiagnoseReply {
  const networks = selectNetworks(context.policy, identity, requested);
  const allowed = networks.filter((network) => identity.uid === 0 || decide(context.policy!, identity, network.name).allowed);
  const links = context.rtnl.listLinks();
  const skipped: ToolFacts = { state: 'skipped', detail: 'no network of this user to check' };
  const listing = allowed.length > 0 ? listFirewall(context.logger) : { nft: skipped, iptables: skipped, tables: [] };

  const facts = networks.map((network): NetworkFacts => {
    const base = { name: network.name, bridge: network.bridge, source: network.source };
    if (!allowed.includes(network)) return { ...base, checked: false, reason: 'bridge and firewall facts are only reported to users the network is allowed to' };
    return { ...base, checked: true, link: bridgeFacts(links, network.bridge), forward: findForwardBlocks(listing.tables, network.bridge) };
  });

  return {
    version: PROTOCOL_VERSION, ok: true, op: 'diagnose',
    daemon: { pid: process.pid, netns: readLinkOrNull('/proc/self/ns/net'), mntns: readLinkOrNull('/proc/self/ns/mnt') },
    tun: tunFacts(),
    brNetfilter: { loaded: existsSync('/proc/sys/net/bridge'), callIptables: readInteger('/proc/sys/net/bridge/bridge-nf-call-iptables') },
    firewall: { nft: listing.nft, iptables: listing.iptables },
    networks: facts,
  };
}

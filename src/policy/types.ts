// The compiled form of a policy, shared by the parser and the decision function.

export interface Network {
  name: string;
  bridge: string;
  /** Location of the network's table, as FILE:LINE. */
  source: string;
}

export interface Limits {
  /** Maximum taps one user may hold at once on one network. */
  maxTaps: number;
  /** Maximum queues per tap. */
  maxQueues: number;
  /** Whether a vhost-net descriptor may be passed with the tap. */
  vhost: boolean;
  /** Whether the user may ask for a tap without anti-spoofing filters. */
  unfiltered: boolean;
}

export interface Rule {
  kind: 'allow' | 'deny';
  /** Optional label from the file; shown in decisions and the audit log. */
  label: string | undefined;
  /** Location of the rule's table header, as FILE:LINE. */
  source: string;
  /** User names or decimal uids. */
  users: string[];
  /** Group names or decimal gids. */
  groups: string[];
  /** Network names; `*` matches every network. */
  networks: string[];
  limits: Limits;
}

export interface DaemonSettings {
  auditLog: string | undefined;
  /** Sustained requests per second each non-root user may make; root is not limited. */
  requestsPerSecond: number;
  /** Requests a user may make at once above the sustained rate. */
  requestBurst: number;
}

/**
 * A QEMU bridge.conf consulted on every request, from the `[bridge_conf]` table.
 * It grants bridges directly: a bridge it allows needs no [networks] table, and is then used as
 * a network named after the bridge. A deny in either file wins over an allow in either.
 */
export interface BridgeConfSource {
  /** Absolute path of the main bridge.conf, read with the requester's credentials. */
  path: string;
  /** Limits for taps that a bridge.conf rule grants. */
  limits: Limits;
  /** Location of the table, as FILE:LINE. */
  source: string;
}

export interface Policy {
  /** The file the policy came from. */
  path: string;
  networks: Map<string, Network>;
  rules: Rule[];
  daemon: DaemonSettings;
  /** Absent when the policy has no [bridge_conf] table. */
  bridgeConf?: BridgeConfSource | undefined;
  /** Problems that do not invalidate the policy, each prefixed with FILE:LINE. */
  warnings: string[];
}

/** The requester, as the kernel reported it for the connection, with names resolved by the daemon. */
export interface Identity {
  uid: number;
  gid: number;
  /** Supplementary groups from SO_PEERGROUPS. */
  groups: number[];
  user: string | undefined;
  /** Names of the primary and supplementary groups that resolve. */
  groupNames: string[];
  pid: number;
}

export const DEFAULT_DAEMON = { requestsPerSecond: 50, requestBurst: 200 };

export const DEFAULT_LIMITS: Limits = { maxTaps: 8, maxQueues: 8, vhost: false, unfiltered: false };

/** Describes a rule for messages and the audit log: `allow rule "lab" at FILE:LINE`. */
export function describeRule(rule: Rule): string {
  const label = rule.label ? ` "${rule.label}"` : '';
  return `${rule.kind} rule${label} at ${rule.source}`;
}

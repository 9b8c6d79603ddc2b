// Parsing and validation of tapgate's TOML policy file into a Policy.
//
// The whole file is checked before it is used; any problem raises one SyntaxError listing
// every error as FILE:LINE: message, so a caller can keep the previous policy in force.

import { parse as parseToml, TomlError } from 'smol-toml';
import { interfaceNameProblem } from '../protocol/names.js';
import { MAX_QUEUES } from '../protocol/messages.js';
import { DEFAULT_DAEMON, DEFAULT_LIMITS, type BridgeConfSource, type Limits, type Network, type Policy, type Rule } from './types.js';

const TOP_LEVEL_KEYS = ['daemon', 'networks', 'allow', 'deny', 'bridge_conf'];
const DAEMON_KEYS = ['audit_log', 'requests_per_second', 'request_burst'];
const NETWORK_KEYS = ['bridge'];
const RULE_KEYS = ['name', 'users', 'groups', 'networks', 'max_taps', 'max_queues', 'vhost', 'unfiltered'];
const LIMIT_KEYS = ['max_taps', 'max_queues', 'vhost', 'unfiltered'];
/** The largest uid or gid: uid_t is 32 bits and (uid_t)-1 means "no id" to setresuid(2) and chown(2). */
const MAX_ID = 4294967294;
const BRIDGE_CONF_KEYS = ['path', 'max_taps', 'max_queues', 'vhost', 'unfiltered'];

/** A policy file that cannot be used; `problems` holds each FILE:LINE: message. */
export class PolicyError extends SyntaxError {
  constructor(readonly path: string, readonly problems: string[]) {
    super(problems.length === 1 ? problems[0] : `${path}: ${problems.length} errors:\n  ${problems.join('\n  ')}`);
    this.name = 'PolicyError';
  }
}

/** Finds the line of each table header, so errors and rules can name FILE:LINE. */
function headerLines(text: string): { tables: Map<string, number>; arrays: Map<string, number[]> } {
  const tables = new Map<string, number>();
  const arrays = new Map<string, number[]>();
  text.split('\n').forEach((line, index) => {
    const array = /^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]/.exec(line);
    if (array) {
      const lines = arrays.get(array[1]) ?? [];
      lines.push(index + 1);
      arrays.set(array[1], lines);
      return;
    }
    const table = /^\s*\[\s*([^\]]+?)\s*\]/.exec(line);
    if (table) tables.set(table[1].replace(/\s*\.\s*/g, '.').replace(/"/g, ''), index + 1);
  });
  return { tables, arrays };
}

class Checker {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];
  constructor(readonly path: string) {}

  at(line: number | undefined): string {
    return line === undefined ? this.path : `${this.path}:${line}`;
  }

  error(line: number | undefined, message: string): void {
    this.problems.push(`${this.at(line)}: ${message}`);
  }

  table(value: unknown, where: string, line: number | undefined, keys: readonly string[]): Record<string, unknown> | undefined {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) {
      this.error(line, `${where} must be a table`);
      return undefined;
    }
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!keys.includes(key)) this.error(line, `unknown key "${key}" in ${where}; expected one of: ${keys.join(', ')}`);
    }
    return record;
  }

  stringList(value: unknown, where: string, line: number | undefined): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || item.length === 0)) {
      this.error(line, `${where} must be a list of non-empty strings, like ["alice", "bob"]`);
      return [];
    }
    return value as string[];
  }

  warning(line: number | undefined, message: string): void {
    this.warnings.push(`${this.at(line)}: ${message}`);
  }

  /**
   * Reads `users` or `groups`: names, or uids/gids written as strings ("1001") or TOML integers
   * (1001). Integers become decimal strings, the form the decision function compares.
   */
  idList(value: unknown, where: string, line: number | undefined, example: string): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.error(line, `${where} must be a list of names or numeric ids, like ${example}; got ${JSON.stringify(value)}`);
      return [];
    }
    const ids: string[] = [];
    for (const item of value as unknown[]) {
      if (typeof item === 'string' && item.length > 0) {
        ids.push(item);
      } else if (typeof item === 'number' && Number.isInteger(item) && item >= 0 && item <= MAX_ID) {
        ids.push(String(item));
      } else if (typeof item === 'number') {
        this.error(line, `${where} contains ${item}, which is not a valid id: write an integer from 0 to ${MAX_ID}, or a name in quotes`);
      } else {
        this.error(line, `${where} contains ${JSON.stringify(item)}: each entry must be a non-empty name or a numeric id, like ${example}`);
      }
    }
    return ids;
  }

  integer(value: unknown, where: string, line: number | undefined, min: number, max: number, fallback: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.error(line, `${where} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return value;
  }

  boolean(value: unknown, where: string, line: number | undefined, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') {
      this.error(line, `${where} must be true or false, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return value;
  }
}

function parseNetworks(checker: Checker, value: unknown, tables: Map<string, number>): Map<string, Network> {
  const networks = new Map<string, Network>();
  if (value === undefined) return networks;
  const record = checker.table(value, '[networks]', tables.get('networks'), Object.keys(value as object));
  if (!record) return networks;
  const bridges = new Map<string, string>();
  for (const [name, definition] of Object.entries(record)) {
    const line = tables.get(`networks.${name}`);
    const nameProblem = interfaceNameProblem(name);
    if (nameProblem) checker.error(line, `network name "${name}" ${nameProblem}`);
    const table = checker.table(definition, `[networks.${name}]`, line, NETWORK_KEYS);
    if (!table) continue;
    const bridge = table.bridge;
    if (typeof bridge !== 'string') {
      checker.error(line, `[networks.${name}] needs bridge = "NAME", the existing bridge this network uses`);
      continue;
    }
    const bridgeProblem = interfaceNameProblem(bridge);
    if (bridgeProblem) checker.error(line, `bridge name "${bridge}" ${bridgeProblem}`);
    const other = bridges.get(bridge);
    if (other) checker.error(line, `bridge "${bridge}" is already used by network "${other}"`);
    bridges.set(bridge, name);
    networks.set(name, { name, bridge, source: checker.at(line) });
  }
  for (const network of networks.values()) {
    const owner = bridges.get(network.name);
    if (owner && owner !== network.name) {
      checker.error(undefined, `network "${network.name}" has the same name as the bridge of network "${owner}"; --br=${network.name} would be ambiguous`);
    }
  }
  return networks;
}

function parseLimits(checker: Checker, record: Record<string, unknown>, where: string, line: number | undefined): Limits {
  return {
    maxTaps: checker.integer(record.max_taps, `${where} max_taps`, line, 0, 65536, DEFAULT_LIMITS.maxTaps),
    maxQueues: checker.integer(record.max_queues, `${where} max_queues`, line, 1, MAX_QUEUES, DEFAULT_LIMITS.maxQueues),
    vhost: checker.boolean(record.vhost, `${where} vhost`, line, DEFAULT_LIMITS.vhost),
    unfiltered: checker.boolean(record.unfiltered, `${where} unfiltered`, line, DEFAULT_LIMITS.unfiltered),
  };
}

/** Parses [bridge_conf]: a QEMU bridge.conf whose rules grant bridges with these limits. */
function parseBridgeConfSource(checker: Checker, value: unknown, line: number | undefined): BridgeConfSource | undefined {
  if (value === undefined) return undefined;
  const record = checker.table(value, '[bridge_conf]', line, BRIDGE_CONF_KEYS);
  if (!record) return undefined;
  const path = record.path;
  if (typeof path !== 'string' || !path.startsWith('/')) {
    checker.error(line, `[bridge_conf] needs path = "/etc/qemu/bridge.conf", the absolute path of a QEMU bridge.conf read on every request ` +
      `with the requester's credentials; its allowed bridges need no [networks] table; got ${JSON.stringify(path)}`);
    return undefined;
  }
  return { path, limits: parseLimits(checker, record, '[bridge_conf]', line), source: checker.at(line) };
}

function parseRules(checker: Checker, kind: 'allow' | 'deny', value: unknown, lines: number[], networks: Map<string, Network>): Rule[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    checker.error(undefined, `"${kind}" must be written as [[${kind}]] tables`);
    return [];
  }
  return value.flatMap((entry, index): Rule[] => {
    const line = lines[index];
    const where = `[[${kind}]]`;
    const record = checker.table(entry, where, line, RULE_KEYS);
    if (!record) return [];
    const label = record.name === undefined ? undefined : String(record.name);
    const problemsBefore = checker.problems.length;
    const users = checker.idList(record.users, `${where} users`, line, '["alice", 1001]');
    const groups = checker.idList(record.groups, `${where} groups`, line, '["kvm", 27]');
    const badIds = checker.problems.length > problemsBefore;
    const ruleNetworks = checker.stringList(record.networks, `${where} networks`, line);
    if (users.length === 0 && groups.length === 0 && !badIds) checker.error(line, `${where} needs users = [...] or groups = [...]; use groups = ["*"] for everyone`);
    if (ruleNetworks.length === 0) checker.error(line, `${where} needs networks = [...]; use ["*"] for every network`);
    const ignored = LIMIT_KEYS.filter((key) => key in record);
    if (kind === 'deny' && ignored.length > 0) {
      checker.warning(line, `${where} sets ${ignored.join(', ')}, which ${ignored.length === 1 ? 'has' : 'have'} no effect on a deny rule; limits apply only to [[allow]] rules, so remove ${ignored.length === 1 ? 'it' : 'them'} here`);
    }
    for (const name of ruleNetworks) {
      if (name !== '*' && !networks.has(name)) checker.error(line, `${where} names network "${name}", which no [networks.${name}] table defines`);
    }
    return [{ kind, label, source: checker.at(line), users, groups, networks: ruleNetworks, limits: parseLimits(checker, record, where, line) }];
  });
}

/**
 * Parses a policy file's text.
 * @param path the file's absolute path, used in every message.
 * @throws PolicyError listing every problem found.
 */
export function parsePolicy(text: string, path: string): Policy {
  const checker = new Checker(path);
  let document: Record<string, unknown>;
  try {
    document = parseToml(text) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof TomlError) throw new PolicyError(path, [`${path}:${error.line}: ${error.message.split('\n')[0]}`]);
    throw error;
  }
  const { tables, arrays } = headerLines(text);
  for (const key of Object.keys(document)) {
    if (!TOP_LEVEL_KEYS.includes(key)) checker.error(tables.get(key), `unknown section "${key}"; expected one of: ${TOP_LEVEL_KEYS.join(', ')}`);
  }

  const daemon = document.daemon === undefined ? {} : checker.table(document.daemon, '[daemon]', tables.get('daemon'), DAEMON_KEYS) ?? {};
  const auditLog = daemon.audit_log;
  if (auditLog !== undefined && (typeof auditLog !== 'string' || !auditLog.startsWith('/'))) {
    checker.error(tables.get('daemon'), `[daemon] audit_log must be an absolute path, got ${JSON.stringify(auditLog)}`);
  }

  const networks = parseNetworks(checker, document.networks, tables);
  const bridgeConf = parseBridgeConfSource(checker, document.bridge_conf, tables.get('bridge_conf'));
  const rules = [
    ...parseRules(checker, 'deny', document.deny, arrays.get('deny') ?? [], networks),
    ...parseRules(checker, 'allow', document.allow, arrays.get('allow') ?? [], networks),
  ];
  if (checker.problems.length > 0) throw new PolicyError(path, checker.problems);
  return {
    path,
    networks,
    rules,
    daemon: {
      auditLog: typeof auditLog === 'string' ? auditLog : undefined,
      requestsPerSecond: checker.integer(daemon.requests_per_second, '[daemon] requests_per_second', tables.get('daemon'), 1, 1_000_000, DEFAULT_DAEMON.requestsPerSecond),
      requestBurst: checker.integer(daemon.request_burst, '[daemon] request_burst', tables.get('daemon'), 1, 1_000_000, DEFAULT_DAEMON.requestBurst),
    },
    bridgeConf,
    warnings: checker.warnings,
  };
}

// `tapgate policy SUBCOMMAND`: offline work on policy files. Each subcommand is one entry of
// SUBCOMMANDS, with its usage line and the function that runs it.
//
// import-bridge-conf prints the tapgate TOML equivalent to a QEMU bridge.conf. Rules of the main
// file become [[allow]] and [[deny]] tables for everyone, which keeps QEMU's precedence because a
// tapgate [[deny]] also wins over every [[allow]]. Included files cannot be converted exactly:
// QEMU applies their rules only to users who can read them. The output keeps them as comments,
// with per-user rules suggested from each file's owner, group and mode.

import { readFileSync, statSync } from 'node:fs';
import { groupById, userById } from '../sys/accounts.js';
import { policyCheckCommand, policyReloadCommand } from './policy-admin.js';
import {
  BridgeConfError, MAX_INCLUDE_DEPTH, WILDCARD, parseBridgeConf, type BridgeConfEntry, type PolicyFileReader,
} from '../policy/bridge-conf.js';

/** The users and groups that can read an included file, as tapgate rule subjects. */
export interface Audience {
  users: string[];
  groups: string[];
  /** The permissions it was derived from, such as `owner root, group kvm, mode 0640`. */
  description: string;
}

export interface ImportSource {
  read: PolicyFileReader;
  /** Returns who may read `path`, or undefined when only root may. */
  audience(path: string): Audience | undefined;
}

interface Subcommand {
  usage: string;
  run(argv: string[]): number | Promise<number>;
}

const toml = (value: string): string => JSON.stringify(value);
const tomlList = (values: string[]): string => `[${values.map(toml).join(', ')}]`;

/** Returns the TOML table key for a network: bare when TOML allows it, quoted otherwise. */
function networkKey(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : toml(name);
}

function comment(lines: string[]): string[] {
  return lines.map((line) => (line === '' ? '#' : `# ${line}`));
}

function ruleTable(kind: 'allow' | 'deny', label: string, subject: string[], bridges: string[]): string[] {
  const networks = bridges.includes(WILDCARD) ? ['*'] : [...new Set(bridges)];
  return [`[[${kind}]]`, `name = ${toml(label)}`, ...subject, `networks = ${tomlList(networks)}`];
}

/** Converts the rules of one file into [[allow]] and [[deny]] tables for `subject`. */
function rulesFor(entries: BridgeConfEntry[], label: string, subject: string[]): string[] {
  const lines: string[] = [];
  for (const kind of ['deny', 'allow'] as const) {
    const bridges = entries.flatMap((entry) => (entry.kind === kind ? [entry.bridge] : []));
    if (bridges.length > 0) lines.push(...ruleTable(kind, `${label} ${kind}`, subject, bridges), '');
  }
  return lines;
}

function subjectOf(audience: Audience): string[] {
  const lines: string[] = [];
  if (audience.users.length > 0) lines.push(`users = ${tomlList(audience.users)}`);
  if (audience.groups.length > 0) lines.push(`groups = ${tomlList(audience.groups)}`);
  return lines;
}

class Converter {
  readonly bridges = new Set<string>();
  readonly includeNotes: string[] = [];
  readonly problems: string[] = [];
  private readonly seen = new Set<string>();

  constructor(private readonly source: ImportSource) {}

  collect(entries: BridgeConfEntry[]): void {
    for (const entry of entries) {
      if (entry.kind !== 'include' && entry.bridge !== WILDCARD) this.bridges.add(entry.bridge);
    }
  }

  /** Adds a commented-out conversion of an included file and of the files it includes. */
  include(path: string, from: string, depth: number): void {
    const heading = `include ${path} (${from})`;
    if (this.seen.has(path) || depth > MAX_INCLUDE_DEPTH) {
      this.includeNotes.push(...comment([`${heading}: already shown above or nested too deep.`]), '');
      return;
    }
    this.seen.add(path);
    let entries: BridgeConfEntry[];
    try {
      entries = parseBridgeConf(this.source.read(path), path);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const reason = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied; run the import as root to see its rules' : (error as Error).message;
      if (error instanceof BridgeConfError) this.problems.push(...error.problems);
      this.includeNotes.push(...comment([`${heading}: could not be converted: ${reason}`]), '');
      return;
    }
    this.collect(entries);
    const audience = this.source.audience(path);
    const rules = audience ? rulesFor(entries, path, subjectOf(audience)) : [];
    const suggestion = audience ? `Its permissions (${audience.description}) suggest these rules:` : 'Only root can read it, so it grants nothing to other users.';
    this.includeNotes.push(...comment([`${heading} applies only to users who can read it.`, suggestion, '', ...rules.slice(0, -1)]), '');
    for (const entry of entries) {
      if (entry.kind === 'include') this.include(entry.path, entry.source, depth + 1);
    }
  }
}

const HEADER = [
  'bridge.conf rules apply to every user, so the rules below have groups = ["*"]. As in bridge.conf,',
  'a [[deny]] wins over every [[allow]], whatever the order.',
];

/**
 * Converts the bridge.conf at `path` into tapgate TOML.
 * @returns the TOML text and the problems found in included files (the output notes them too).
 * @throws BridgeConfError when the main file has an error, or Error when it cannot be read.
 */
export function convertBridgeConf(path: string, source: ImportSource): { toml: string; problems: string[] } {
  const entries = parseBridgeConf(source.read(path), path);
  const converter = new Converter(source);
  converter.collect(entries);
  for (const entry of entries) {
    if (entry.kind === 'include') converter.include(entry.path, entry.source, 1);
  }

  const lines = [...comment([`Converted from ${path} by "tapgate policy import-bridge-conf".`, ...HEADER]), ''];
  for (const bridge of [...converter.bridges].sort()) lines.push(`[networks.${networkKey(bridge)}]`, `bridge = ${toml(bridge)}`, '');
  const wildcard = entries.find((entry) => entry.kind === 'allow' && entry.bridge === WILDCARD);
  if (wildcard) {
    lines.push(...comment([
      `"allow all" (${wildcard.source}) grants every bridge, but networks = ["*"] covers only the`,
      '[networks] tables of this file: add one for each further bridge that users may use.',
    ]));
  }
  lines.push(...rulesFor(entries, 'bridge.conf', ['groups = ["*"]']));
  if (converter.includeNotes.length > 0) {
    lines.push(...comment([
      'Included files were not converted. To keep their per-user effect exactly, use bridge.conf as a',
      'policy source, which the daemon reads with each requester\'s credentials:',
      '  [bridge_conf]',
      `  path = ${toml(path)}`,
      'or write per-user rules. A suggestion follows for each file; check ACLs and nested includes first.',
    ]), '', ...converter.includeNotes);
  }
  return { toml: `${lines.join('\n').trimEnd()}\n`, problems: converter.problems };
}

function readFile(path: string): Buffer {
  return readFileSync(path);
}

/** Derives who may read a file from its owner, group and mode bits (ACLs are not consulted). */
function fileAudience(path: string): Audience | undefined {
  const stat = statSync(path);
  const owner = userById(stat.uid)?.name ?? String(stat.uid);
  const group = groupById(stat.gid)?.name ?? String(stat.gid);
  const description = `owner ${owner}, group ${group}, mode ${(stat.mode & 0o7777).toString(8).padStart(4, '0')}`;
  if (stat.mode & 0o004) return { users: [], groups: ['*'], description };
  const users = stat.mode & 0o400 && stat.uid !== 0 ? [owner] : [];
  const groups = stat.mode & 0o040 ? [group] : [];
  return users.length + groups.length > 0 ? { users, groups, description } : undefined;
}

function importBridgeConfCommand(argv: string[]): number {
  const [path, ...extra] = argv;
  if (path === undefined || extra.length > 0 || path.startsWith('-')) {
    process.stderr.write(`tapgate: policy import-bridge-conf needs exactly one argument, the bridge.conf path\n`);
    return 1;
  }
  let result: { toml: string; problems: string[] };
  try {
    result = convertBridgeConf(path, { read: readFile, audience: fileAudience });
  } catch (error) {
    const problems = error instanceof BridgeConfError ? error.problems : [`${path}: ${(error as Error).message}`];
    for (const problem of problems) process.stderr.write(`tapgate: ${problem}\n`);
    return 1;
  }
  process.stdout.write(result.toml);
  for (const problem of result.problems) process.stderr.write(`tapgate: ${problem}\n`);
  return result.problems.length > 0 ? 1 : 0;
}

const SUBCOMMANDS: Record<string, Subcommand> = {
  'import-bridge-conf': {
    usage: 'import-bridge-conf FILE    print the tapgate policy equivalent to a QEMU bridge.conf',
    run: importBridgeConfCommand,
  },
  check: {
    usage: 'check [FILE]               validate a policy file (default: the daemon\'s) and print FILE:LINE: problems',
    run: policyCheckCommand,
  },
  reload: {
    usage: 'reload                     make the running daemon re-read its policy (root); an invalid file is not loaded',
    run: policyReloadCommand,
  },
};

function usage(): string {
  return `Usage: tapgate policy SUBCOMMAND [ARGS]\n\nSubcommands:\n${Object.values(SUBCOMMANDS).map((entry) => `  ${entry.usage}`).join('\n')}\n`;
}

/** Runs `tapgate policy ARGS` and resolves with the exit status. */
export async function policyCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 1 : 0;
  }
  const subcommand = SUBCOMMANDS[name];
  if (!subcommand) {
    process.stderr.write(`tapgate: unknown policy subcommand ${JSON.stringify(name)}\n\n${usage()}`);
    return 1;
  }
  return subcommand.run(rest);
}

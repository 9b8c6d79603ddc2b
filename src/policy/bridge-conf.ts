// QEMU's bridge.conf access-control format: a strict parser, the include walk and QEMU's
// precedence rules.
//
// qemu-bridge-helper reads /etc/qemu/bridge.conf line by line. Each rule line contains a keyword
// and one argument: `allow NAME`, `deny NAME` (NAME may be `all`, the wildcard) or
// `include PATH`. The helper reads each include with the caller's credentials, so a file that
// only some users can read holds rules for those users only. This module keeps that grammar but
// rejects everything QEMU reads inconsistently, naming FILE:LINE and the offending token:
// - tokens are separated by any run of spaces and tabs, and one trailing CR is removed;
// - blank lines and lines whose first non-blank character is `#` are skipped;
// - a rule line has exactly two tokens, so an inline `# comment` is an error;
// - keywords are case-sensitive, a NUL byte or invalid UTF-8 is an error, lines are never split;
// - allow/deny names must be valid interface names, and 16 bytes or more is "name too long";
// - include paths must be absolute, and cycles and nesting deeper than 8 files are errors.
// Unlike QEMU, an error in any readable file, included ones too, makes the whole load fail,
// so the caller denies the request. The module does no I/O: the caller passes a reader.

import { interfaceNameProblem, MAX_INTERFACE_NAME_BYTES } from '../protocol/names.js';

/** The deepest include nesting accepted; the main file is at depth 0. */
export const MAX_INCLUDE_DEPTH = 8;
/** A bound on distinct files per load, so a wide include tree cannot stall the daemon. */
export const MAX_INCLUDED_FILES = 256;
/** The argument of `allow` and `deny` that matches every bridge. */
export const WILDCARD = 'all';

export interface BridgeConfRule {
  kind: 'allow' | 'deny';
  /** A bridge name, or `all` for every bridge. */
  bridge: string;
  /** Location of the rule, as FILE:LINE. */
  source: string;
}

export interface BridgeConfInclude {
  kind: 'include';
  /** The absolute path as written. */
  path: string;
  source: string;
}

export type BridgeConfEntry = BridgeConfRule | BridgeConfInclude;

/**
 * Returns a policy file's content, or throws an Error whose `code` is the errno name
 * (`ENOENT`, `EACCES`, ...). The daemon's reader opens files with the requester's credentials.
 */
export type PolicyFileReader = (path: string) => Buffer;

/**
 * A bridge.conf set that cannot be used. Each problem starts with FILE:LINE: or FILE:, and the
 * message is the first problem, a count of the others and `context`.
 */
export class BridgeConfError extends Error {
  constructor(readonly problems: string[], context = '') {
    const others = problems.length - 1;
    const more = others > 0 ? ` (and ${others} more ${others === 1 ? 'error' : 'errors'} in the same file)` : '';
    super(`${problems[0]}${more}${context}`);
    this.name = 'BridgeConfError';
  }
}

const KEYWORDS = ['allow', 'deny', 'include'];
const utf8 = new TextDecoder('utf-8', { fatal: true });

function splitLines(content: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let end = content.indexOf(0x0a); end >= 0; end = content.indexOf(0x0a, start)) {
    lines.push(content.subarray(start, end));
    start = end + 1;
  }
  if (start < content.length) lines.push(content.subarray(start));
  return lines;
}

function decodeLine(bytes: Buffer, location: string): string {
  const line = bytes.at(-1) === 0x0d ? bytes.subarray(0, -1) : bytes;
  const nul = line.indexOf(0);
  if (nul >= 0) throw new Error(`${location}: NUL byte at column ${nul + 1}; bridge.conf must be plain text`);
  try {
    return utf8.decode(line);
  } catch {
    throw new Error(`${location}: invalid UTF-8; bridge.conf must be plain text`);
  }
}

function checkKeyword(keyword: string, location: string): void {
  if (KEYWORDS.includes(keyword)) return;
  const hint = KEYWORDS.includes(keyword.toLowerCase()) ? 'keywords are lower case' : 'expected allow, deny or include';
  throw new Error(`${location}: unknown keyword ${JSON.stringify(keyword)}; ${hint}`);
}

function checkArgumentCount(tokens: string[], location: string): void {
  const [keyword, argument, extra] = tokens;
  if (argument === undefined) {
    const what = keyword === 'include' ? 'an absolute file path' : `a bridge name or ${WILDCARD}`;
    throw new Error(`${location}: ${JSON.stringify(keyword)} needs one argument, ${what}`);
  }
  if (extra === undefined) return;
  const hint = extra.startsWith('#') ? 'a comment must be on a line of its own' : 'a rule line has one keyword and one argument';
  throw new Error(`${location}: unexpected ${JSON.stringify(extra)} after ${JSON.stringify(argument)}; ${hint}`);
}

function checkBridgeName(name: string, location: string): void {
  if (name === WILDCARD) return;
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_INTERFACE_NAME_BYTES) {
    throw new Error(`${location}: name too long: ${JSON.stringify(name)} is ${bytes} bytes, the maximum is ${MAX_INTERFACE_NAME_BYTES}`);
  }
  const problem = interfaceNameProblem(name);
  if (problem) throw new Error(`${location}: invalid bridge name ${JSON.stringify(name)}: ${problem}`);
}

/** Parses one line; returns undefined for blank and comment lines. */
function parseLine(bytes: Buffer, location: string): BridgeConfEntry | undefined {
  const tokens = decodeLine(bytes, location).split(/[ \t]+/).filter((token) => token !== '');
  const keyword = tokens[0];
  if (keyword === undefined || keyword.startsWith('#')) return undefined;
  checkKeyword(keyword, location);
  checkArgumentCount(tokens, location);
  const argument = tokens[1]!;

  if (keyword === 'include') {
    if (!argument.startsWith('/')) {
      throw new Error(`${location}: include path must be absolute: ${JSON.stringify(argument)} would depend on the caller's working directory`);
    }
    return { kind: 'include', path: argument, source: location };
  }
  checkBridgeName(argument, location);
  return { kind: keyword as 'allow' | 'deny', bridge: argument, source: location };
}

/**
 * Parses the content of one bridge.conf file, without following its includes.
 * @param path the file's path, used in every message as PATH:LINE.
 * @returns the rules and includes in file order.
 * @throws BridgeConfError listing every bad line.
 */
export function parseBridgeConf(content: Buffer, path: string): BridgeConfEntry[] {
  const entries: BridgeConfEntry[] = [];
  const problems: string[] = [];
  splitLines(content).forEach((bytes, index) => {
    try {
      const entry = parseLine(bytes, `${path}:${index + 1}`);
      if (entry) entries.push(entry);
    } catch (error) {
      problems.push((error as Error).message);
    }
  });
  if (problems.length > 0) throw new BridgeConfError(problems);
  return entries;
}

export interface LoadedBridgeConf {
  /** Every rule of every file the reader could open, in reading order. */
  rules: BridgeConfRule[];
  /** The files read, main file first. */
  files: string[];
  /** Includes skipped because they do not exist, each as `FILE:LINE: ...`. */
  warnings: string[];
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Walks the include tree depth-first and records, per file, how deep its own includes go. */
class IncludeWalk {
  readonly result: LoadedBridgeConf = { rules: [], files: [], warnings: [] };
  /** Files already walked (or skipped), with the depth of their include subtree. */
  private readonly heights = new Map<string, number>();

  constructor(private readonly read: PolicyFileReader) {}

  /** Adds the rules of `path` and its includes; returns the depth of its include subtree. */
  walk(path: string, content: Buffer, chain: string[]): number {
    this.result.files.push(path);
    let height = 0;
    for (const entry of parseBridgeConf(content, path)) {
      if (entry.kind === 'include') {
        height = Math.max(height, this.include(entry, chain) + 1);
      } else {
        this.result.rules.push(entry);
      }
    }
    this.heights.set(path, height);
    return height;
  }

  private include(entry: BridgeConfInclude, chain: string[]): number {
    const trail = [...chain, entry.path].join(' -> ');
    if (chain.includes(entry.path)) throw new BridgeConfError([`${entry.source}: include cycle: ${trail}`]);
    const known = this.heights.get(entry.path);
    if (chain.length + (known ?? 0) > MAX_INCLUDE_DEPTH) {
      throw new BridgeConfError([`${entry.source}: includes nested more than ${MAX_INCLUDE_DEPTH} deep: ${trail}`]);
    }
    // Rules are a union, so a file reached a second time adds nothing new.
    if (known !== undefined) return known;
    if (this.heights.size >= MAX_INCLUDED_FILES) {
      throw new BridgeConfError([`${entry.source}: include ${entry.path}: more than ${MAX_INCLUDED_FILES} files in one bridge.conf tree`]);
    }

    let content: Buffer;
    try {
      content = this.read(entry.path);
    } catch (error) {
      const code = errorCode(error);
      this.heights.set(entry.path, 0);
      // An include the caller may not read contains rules for other users, which is how
      // bridge.conf expresses per-user rules.
      if (code === 'EACCES') return 0;
      if (code === 'ENOENT') {
        this.result.warnings.push(`${entry.source}: include ${entry.path}: not found, skipped`);
        return 0;
      }
      throw new BridgeConfError([`${entry.source}: include ${entry.path}: ${(error as Error).message}`]);
    }
    return this.walk(entry.path, content, [...chain, entry.path]);
  }
}

/** Returns the usual words for a main file that cannot be read. */
function describeMainReadError(path: string, error: unknown): string {
  const code = errorCode(error);
  if (code === 'ENOENT') return `${path}: not found`;
  if (code === 'EACCES') {
    return `${path}: permission denied; the file is read with the requesting user's credentials, so every user who may start VMs needs read access (mode 0644)`;
  }
  return `${path}: ${(error as Error).message}`;
}

/**
 * Reads a main bridge.conf and every include through `read`, and collects their rules.
 * Includes that `read` reports as EACCES are skipped silently, and ENOENT ones with a warning.
 * @param path the absolute path of the main file.
 * @throws BridgeConfError when the main file cannot be read, any file read has a bad line,
 *   includes form a cycle or nest deeper than MAX_INCLUDE_DEPTH, or an include fails otherwise.
 */
export function loadBridgeConf(path: string, read: PolicyFileReader): LoadedBridgeConf {
  let content: Buffer;
  try {
    content = read(path);
  } catch (error) {
    throw new BridgeConfError([describeMainReadError(path, error)]);
  }
  const walk = new IncludeWalk(read);
  walk.walk(path, content, [path]);
  return walk.result;
}

export interface BridgeConfVerdict {
  allowed: boolean;
  /** The deciding rule: a matching deny, else a matching allow; undefined when none matches. */
  rule: BridgeConfRule | undefined;
}

/**
 * Applies QEMU's precedence: `bridge` is allowed when an `allow all` or `allow BRIDGE` rule
 * exists and neither `deny all` nor `deny BRIDGE` does. Rule order does not matter.
 */
export function evaluateBridgeConf(conf: Pick<LoadedBridgeConf, 'rules'>, bridge: string): BridgeConfVerdict {
  const matches = (rule: BridgeConfRule): boolean => rule.bridge === WILDCARD || rule.bridge === bridge;
  const deny = conf.rules.find((rule) => rule.kind === 'deny' && matches(rule));
  if (deny) return { allowed: false, rule: deny };
  const allow = conf.rules.find((rule) => rule.kind === 'allow' && matches(rule));
  return { allowed: allow !== undefined, rule: allow };
}

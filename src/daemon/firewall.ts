// Finds FORWARD chains that drop the IPv4 frames crossing a bridge, from `nft -j list ruleset`
// JSON and `iptables -S` text. Pure functions: the daemon runs the tools, this file reads their output.
//
// With br_netfilter loaded and net.bridge.bridge-nf-call-iptables=1 (or the bridge's own
// nf_call_iptables option), a frame bridged between two ports of BR passes the IPv4 forward hook
// with BR as both input and output interface. So `iifname "BR" oifname "BR" accept` in nft, or
// `-m physdev --physdev-is-bridged -j ACCEPT` in iptables, lets it through, and a chain policy of
// drop or an unconditional drop rule silently discards it.
//
// The evaluation is deliberately partial: a rule condition other than the interface names and
// physdev's --physdev-is-bridged (addresses, ports, conntrack state...) makes the rule match
// only "some" frames. Such a rule never counts as accepting everything, and as a drop it is only
// reported, as uncertain, when it also names the bridge.

import type { ForwardBlock } from '../protocol/diagnose.js';

type Condition =
  | { kind: 'interface'; field: string; names: string[]; wildcard: string; negated: boolean }
  | { kind: 'bridged'; negated: boolean }
  | { kind: 'other' };

type Verdict = { kind: 'accept' | 'drop' | 'return' | 'none' } | { kind: 'jump' | 'goto'; target: string };

interface ParsedRule {
  conditions: Condition[];
  verdict: Verdict;
  text: string;
}

interface ParsedChain {
  name: string;
  /** Whether this is a filter base chain on the forward hook. */
  forwardHook: boolean;
  policy: 'accept' | 'drop';
  rules: ParsedRule[];
}

export interface ParsedTable {
  tool: 'nft' | 'iptables';
  family: string;
  name: string;
  chains: Map<string, ParsedChain>;
}

/** Families whose forward hook receives the IPv4 frames that br_netfilter passes on. */
const IPV4_FAMILIES = new Set(['ip', 'inet']);
/** Bound on jump nesting; the kernel's own limit for nft is 16 (NFT_JUMP_STACK_SIZE). */
const MAX_JUMP_DEPTH = 16;

// --- nft -j list ruleset -------------------------------------------------------------------

const NFT_INTERFACE_KEYS = new Set(['iifname', 'oifname', 'iif', 'oif']);
const NFT_IGNORED_STATEMENTS = new Set(['counter', 'log', 'mangle', 'notrack', 'comment']);

function nftCondition(match: Record<string, unknown>): Condition {
  const key = ((match.left as { meta?: { key?: unknown } } | undefined)?.meta?.key);
  if (typeof key !== 'string' || !NFT_INTERFACE_KEYS.has(key)) return { kind: 'other' };
  const right = match.right;
  const values = typeof right === 'string' ? [right] : (right as { set?: unknown } | null)?.set;
  if (!Array.isArray(values) || !values.every((value) => typeof value === 'string')) return { kind: 'other' };
  if (match.op === '==' || match.op === 'in') return { kind: 'interface', field: key, names: values, wildcard: '*', negated: false };
  if (match.op === '!=') return { kind: 'interface', field: key, names: values, wildcard: '*', negated: true };
  return { kind: 'other' };
}

function summarizeNftRule(handle: unknown, conditions: Condition[], verdict: Verdict): string {
  const parts = conditions.map((condition) => {
    if (condition.kind !== 'interface') return '…';
    const names = condition.names.length === 1 ? `"${condition.names[0]}"` : `{ ${condition.names.map((name) => `"${name}"`).join(', ')} }`;
    return `${condition.field} ${condition.negated ? '!= ' : ''}${names}`;
  });
  parts.push(verdict.kind === 'jump' || verdict.kind === 'goto' ? `${verdict.kind} ${verdict.target}` : verdict.kind);
  return `handle ${String(handle)}: ${parts.join(' ')}`;
}

function parseNftRule(expressions: unknown[], handle: unknown): ParsedRule {
  const conditions: Condition[] = [];
  let verdict: Verdict = { kind: 'none' };
  for (const expression of expressions) {
    const [key, value] = Object.entries(expression as Record<string, unknown>)[0] ?? [];
    if (key === undefined || NFT_IGNORED_STATEMENTS.has(key)) continue;
    if (key === 'match') conditions.push(nftCondition(value as Record<string, unknown>));
    else if (key === 'accept') verdict = { kind: 'accept' };
    else if (key === 'drop' || key === 'reject') verdict = { kind: 'drop' };
    else if (key === 'return') verdict = { kind: 'return' };
    else if ((key === 'jump' || key === 'goto') && typeof (value as { target?: unknown })?.target === 'string') {
      verdict = { kind: key, target: (value as { target: string }).target };
    } else conditions.push({ kind: 'other' });
  }
  return { conditions, verdict, text: summarizeNftRule(handle, conditions, verdict) };
}

/**
 * Reads the tables of `nft -j list ruleset` output (libnftables JSON schema version 1).
 * `skip` leaves out a base chain, for chains that `iptables -S` already describes more precisely.
 * Unknown entries are ignored, so newer nft versions degrade to fewer findings, not errors.
 */
export function parseNftRuleset(json: unknown, skip: (family: string, table: string, chain: string) => boolean = () => false): ParsedTable[] {
  const items = (json as { nftables?: unknown } | null)?.nftables;
  if (!Array.isArray(items)) throw new TypeError('nft output has no "nftables" array');
  const tables = new Map<string, ParsedTable>();
  const tableOf = (family: string, name: string): ParsedTable => {
    const key = `${family} ${name}`;
    let table = tables.get(key);
    if (!table) tables.set(key, (table = { tool: 'nft', family, name, chains: new Map() }));
    return table;
  };
  for (const item of items as Record<string, Record<string, unknown>>[]) {
    const chain = item.chain;
    if (chain && typeof chain.family === 'string' && typeof chain.table === 'string' && typeof chain.name === 'string') {
      if (skip(chain.family, chain.table, chain.name)) continue;
      tableOf(chain.family, chain.table).chains.set(chain.name, {
        name: chain.name,
        forwardHook: chain.hook === 'forward' && (chain.type ?? 'filter') === 'filter',
        policy: chain.policy === 'drop' ? 'drop' : 'accept',
        rules: [],
      });
    }
    const rule = item.rule;
    if (rule && typeof rule.family === 'string' && typeof rule.table === 'string' && typeof rule.chain === 'string' && Array.isArray(rule.expr)) {
      tables.get(`${rule.family} ${rule.table}`)?.chains.get(rule.chain)?.rules.push(parseNftRule(rule.expr, rule.handle));
    }
  }
  return [...tables.values()];
}

// --- iptables -S ---------------------------------------------------------------------------

/** Splits one `iptables -S` line into words; iptables quotes values with spaces in double quotes. */
function splitWords(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) words.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : match[2]!);
  return words;
}

function iptablesVerdict(target: string | undefined, chains: Set<string>, jump: 'jump' | 'goto'): Verdict {
  if (target === 'ACCEPT') return { kind: 'accept' };
  if (target === 'DROP' || target === 'REJECT') return { kind: 'drop' };
  if (target === 'RETURN') return { kind: 'return' };
  if (target !== undefined && chains.has(target)) return { kind: jump, target };
  return { kind: 'none' };
}

function parseIptablesRule(words: string[], line: string, chains: Set<string>): ParsedRule {
  const conditions: Condition[] = [];
  let verdict: Verdict = { kind: 'none' };
  let negated = false;
  for (let index = 0; index < words.length; index++) {
    const word = words[index]!;
    if (word === '!') {
      negated = true;
      continue;
    }
    if (word === '-i' || word === '--in-interface' || word === '-o' || word === '--out-interface') {
      const field = word === '-i' || word === '--in-interface' ? 'iifname' : 'oifname';
      conditions.push({ kind: 'interface', field, names: [words[++index] ?? ''], wildcard: '+', negated });
    } else if (word === '--physdev-is-bridged') {
      conditions.push({ kind: 'bridged', negated });
    } else if (word === '-m' || word === '--match') {
      const module = words[++index];
      if (module !== 'comment' && module !== 'physdev') conditions.push({ kind: 'other' });
    } else if (word === '--comment') {
      index++;
    } else if (word === '-j' || word === '--jump' || word === '-g' || word === '--goto') {
      verdict = iptablesVerdict(words[index + 1], chains, word === '-g' || word === '--goto' ? 'goto' : 'jump');
      break; // what follows are the target's own options
    } else if (word.startsWith('-')) {
      conditions.push({ kind: 'other' });
    }
    negated = false;
  }
  return { conditions, verdict, text: line };
}

/** Reads the filter table from `iptables -S` output (policies, user chains and rules). */
export function parseIptablesRules(text: string): ParsedTable {
  const lines = text.split('\n').map((line) => line.trim()).filter((line) => line.startsWith('-'));
  const table: ParsedTable = { tool: 'iptables', family: 'ip', name: 'filter', chains: new Map() };
  const chainNames = new Set(lines.map(splitWords).filter((words) => words[0] === '-P' || words[0] === '-N').map((words) => words[1] ?? ''));
  for (const name of chainNames) table.chains.set(name, { name, forwardHook: name === 'FORWARD', policy: 'accept', rules: [] });
  for (const line of lines) {
    const words = splitWords(line);
    const chain = table.chains.get(words[1] ?? '');
    if (!chain) continue;
    if (words[0] === '-P') chain.policy = words[2] === 'DROP' ? 'drop' : 'accept';
    if (words[0] === '-A') chain.rules.push(parseIptablesRule(words.slice(2), line, chainNames));
  }
  return table;
}

// --- evaluation ----------------------------------------------------------------------------

function conditionHolds(condition: Condition, bridge: string): boolean | undefined {
  if (condition.kind === 'other') return undefined;
  if (condition.kind === 'bridged') return !condition.negated;
  const matches = condition.names.some((name) => name === bridge ||
    (name.endsWith(condition.wildcard) && bridge.startsWith(name.slice(0, -condition.wildcard.length))));
  return condition.negated ? !matches : matches;
}

/** Decides whether a rule matches every bridged frame of `bridge` ('all'), none, or only some of them. */
function matchRule(rule: ParsedRule, bridge: string): { match: 'all' | 'some' | 'none'; namesBridge: boolean } {
  let unknown = false;
  let namesBridge = false;
  for (const condition of rule.conditions) {
    const holds = conditionHolds(condition, bridge);
    if (holds === false) return { match: 'none', namesBridge: false };
    if (holds === undefined) unknown = true;
    if (condition.kind === 'bridged' || (condition.kind === 'interface' && !condition.negated)) namesBridge = true;
  }
  return { match: unknown ? 'some' : 'all', namesBridge };
}

interface Outcome {
  verdict: 'accept' | 'drop' | 'continue';
  /** The rule that dropped, when `verdict` is 'drop'. */
  rule?: string;
  /** Drop rules that name the bridge but also other conditions, met before the outcome. */
  possible: string[];
}

/** Follows a bridged frame of `bridge` through `chain` as far as the conditions can be decided. */
function walkChain(table: ParsedTable, chain: ParsedChain, bridge: string, depth: number): Outcome {
  const possible: string[] = [];
  if (depth > MAX_JUMP_DEPTH) return { verdict: 'continue', possible };
  for (const rule of chain.rules) {
    const { match, namesBridge } = matchRule(rule, bridge);
    if (match === 'none') continue;
    const verdict = rule.verdict;
    if (verdict.kind === 'accept' && match === 'all') return { verdict: 'accept', possible };
    if (verdict.kind === 'drop' && match === 'all') return { verdict: 'drop', rule: rule.text, possible };
    if (verdict.kind === 'drop' && namesBridge) possible.push(rule.text);
    if (verdict.kind === 'return' && match === 'all') return { verdict: 'continue', possible };
    if (verdict.kind !== 'jump' && verdict.kind !== 'goto') continue;

    const target = table.chains.get(verdict.target);
    if (!target) continue;
    const inner = walkChain(table, target, bridge, depth + 1);
    possible.push(...inner.possible);
    if (match === 'all' && inner.verdict !== 'continue') return { ...inner, possible };
    if (match === 'some' && inner.verdict === 'drop' && namesBridge && inner.rule) possible.push(inner.rule);
    // A goto does not come back: when the target chain ends, so does this one.
    if (match === 'all' && verdict.kind === 'goto') return { verdict: 'continue', possible };
  }
  return { verdict: 'continue', possible };
}

/**
 * Lists the IPv4 forward base chains in `tables` that drop (certain) or may drop (uncertain)
 * frames bridged between ports of `bridge`. Each base chain on the hook is evaluated on its own,
 * because an accept in one does not stop another chain on the same hook from dropping.
 */
export function findForwardBlocks(tables: ParsedTable[], bridge: string): ForwardBlock[] {
  const blocks: ForwardBlock[] = [];
  for (const table of tables) {
    if (!IPV4_FAMILIES.has(table.family)) continue;
    for (const chain of table.chains.values()) {
      if (!chain.forwardHook) continue;
      const base = { tool: table.tool, family: table.family, table: table.name, chain: chain.name };
      const outcome = walkChain(table, chain, bridge, 0);
      for (const rule of new Set(outcome.possible)) blocks.push({ ...base, by: 'rule', certain: false, rule });
      if (outcome.verdict === 'drop') blocks.push({ ...base, by: 'rule', certain: true, rule: outcome.rule });
      if (outcome.verdict === 'continue' && chain.policy === 'drop') blocks.push({ ...base, by: 'policy', certain: true });
    }
  }
  return blocks;
}

// `tapgate audit`: reads the daemon's audit log (one JSON object per line, schema in
// src/daemon/audit.ts) and prints the matching records as a table or as JSON lines.

import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { parsePolicy } from '../policy/config.js';
import { DEFAULT_CONFIG } from '../protocol/paths.js';
import { userByName } from '../sys/accounts.js';
import type { AuditEntry } from '../protocol/audit-record.js';

export const DEFAULT_AUDIT_LOG = '/var/log/tapgate/audit.log';

export const AUDIT_USAGE = `Usage: tapgate audit [--since TIME] [--user USER] [--json] [--file PATH] [--config FILE]

Prints the daemon's audit records: one per decision on a tap request and one per lease end.

Options:
  --since TIME    only records at or after TIME: an ISO 8601 time (2026-05-01T12:00:00Z;
                  without a zone it is local time; a date alone is local midnight) or an age
                  such as 30s, 10m, 2h, 1d or 1w
  --user USER     only records of this user, by name or uid
  --json          print the records as JSON lines instead of a table
  --file PATH     the audit log to read (default: [daemon] audit_log of the policy file,
                  else ${DEFAULT_AUDIT_LOG}); rotated files are not read
  --config FILE   the policy file that names the audit log (default: ${DEFAULT_CONFIG})
`;

export type { AuditEntry };

export class AuditUsageError extends Error {}

const AGE_UNITS_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const ISO_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/i;
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/**
 * Parses a --since value: an age (`10m`, `2h`, `1d`) counted back from `now`, or an ISO 8601
 * time or date. Times without a zone and dates are local time, as `date` prints them.
 * @throws AuditUsageError naming the value and the accepted forms.
 */
export function parseSince(text: string, now: Date = new Date()): Date {
  const age = /^(\d+)([smhdw])$/.exec(text);
  if (age) return new Date(now.getTime() - Number(age[1]) * AGE_UNITS_MS[age[2]]);
  const date = ISO_DATE.exec(text);
  let parsed: Date | undefined;
  if (date) parsed = new Date(Number(date[1]), Number(date[2]) - 1, Number(date[3]));
  else if (ISO_TIME.test(text)) parsed = new Date(text.replace(' ', 'T'));
  if (parsed === undefined || Number.isNaN(parsed.getTime())) {
    throw new AuditUsageError(`invalid --since ${JSON.stringify(text)}: expected an ISO 8601 time such as 2026-05-01T12:00:00Z or 2026-05-01, or an age such as 30s, 10m, 2h, 1d or 1w`);
  }
  return parsed;
}

/** Parses one line of the audit log; returns undefined for a line that is not an audit record. */
export function parseAuditLine(line: string): AuditEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  if (typeof record.time !== 'string' || Number.isNaN(Date.parse(record.time))) return undefined;
  if (typeof record.event !== 'string' || typeof record.uid !== 'number' || typeof record.decision !== 'string') return undefined;
  return record as unknown as AuditEntry;
}

/** Criteria for the records to print; an absent field matches every record. */
export interface AuditFilter {
  since?: Date;
  /** A user name or decimal uid, as given on the command line. */
  user?: string;
  /** The uid that `user` resolves to, so that records written without a name match too. */
  uid?: number;
}

export function matchesFilter(entry: AuditEntry, filter: AuditFilter): boolean {
  if (filter.since && Date.parse(entry.time) < filter.since.getTime()) return false;
  if (filter.user !== undefined) {
    const byName = entry.user !== null && entry.user === filter.user;
    const byUid = String(entry.uid) === filter.user || entry.uid === filter.uid;
    if (!byName && !byUid) return false;
  }
  return true;
}

/** Returns `FILE:LINE` from a rule description such as `allow rule "lab" at FILE:LINE`. */
function ruleLocation(rule: string | null): string {
  if (rule === null) return '-';
  const at = rule.lastIndexOf(' at ');
  return at < 0 ? rule : rule.slice(at + 4);
}

const COLUMNS = ['TIME', 'DECISION', 'USER', 'NETWORK', 'TAP', 'RULE', 'REASON'];

/** Formats records as an aligned table; the reason, often long, comes last and is not cut. */
export function formatTable(entries: AuditEntry[]): string {
  const rows = entries.map((entry) => [
    entry.time,
    entry.decision,
    entry.user === null ? String(entry.uid) : `${entry.user}(${entry.uid})`,
    entry.network ?? '-',
    entry.tap ?? '-',
    ruleLocation(entry.rule),
    entry.reason,
  ]);
  const widths = COLUMNS.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const format = (row: string[]): string => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join('  ');
  return [format(COLUMNS), ...rows.map(format)].join('\n') + '\n';
}

/** Returns the audit log that the policy file names, or the default when it names none. */
function auditLogOf(config: string): { path: string; warning?: string } {
  let text: string;
  try {
    text = readFileSync(config, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { path: DEFAULT_AUDIT_LOG };
    return { path: DEFAULT_AUDIT_LOG, warning: `cannot read ${config} (${code ?? String(error)}) to find [daemon] audit_log; reading ${DEFAULT_AUDIT_LOG}` };
  }
  try {
    return { path: parsePolicy(text, config).daemon.auditLog ?? DEFAULT_AUDIT_LOG };
  } catch (error) {
    return { path: DEFAULT_AUDIT_LOG, warning: `${config} is invalid, so its [daemon] audit_log is unknown; reading ${DEFAULT_AUDIT_LOG}: ${(error as Error).message}` };
  }
}

function buildFilter(since: string | undefined, user: string | undefined): AuditFilter {
  const filter: AuditFilter = {};
  if (since !== undefined) filter.since = parseSince(since);
  if (user !== undefined) {
    filter.user = user;
    if (!/^\d+$/.test(user)) filter.uid = userByName(user)?.uid;
  }
  return filter;
}

function fail(message: string): number {
  process.stderr.write(`tapgate audit: ${message}\n`);
  return 1;
}

/** Runs `tapgate audit` and resolves with its exit status. */
export async function auditCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      since: { type: 'string' }, user: { type: 'string' }, json: { type: 'boolean' },
      file: { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(AUDIT_USAGE);
    return 0;
  }
  let filter: AuditFilter;
  try {
    filter = buildFilter(values.since, values.user);
  } catch (error) {
    if (error instanceof AuditUsageError) return fail(error.message);
    throw error;
  }
  let path = values.file;
  if (path === undefined) {
    const found = auditLogOf(values.config ?? DEFAULT_CONFIG);
    if (found.warning) process.stderr.write(`tapgate audit: ${found.warning}\n`);
    path = found.path;
  }
  return printRecords(path, filter, values.json ?? false);
}

async function printRecords(path: string, filter: AuditFilter, json: boolean): Promise<number> {
  const matches: AuditEntry[] = [];
  const invalidLines: number[] = [];
  let lineNumber = 0;
  try {
    const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
    for await (const line of lines) {
      lineNumber++;
      if (line.trim() === '') continue;
      const entry = parseAuditLine(line);
      if (!entry) invalidLines.push(lineNumber);
      else if (matchesFilter(entry, filter)) matches.push(entry);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return fail(`${path}: not found; check [daemon] audit_log in the policy file or pass --file PATH`);
    if (code === 'EACCES') return fail(`${path}: permission denied; the audit log is readable by root only, run "sudo tapgate audit"`);
    return fail(`reading ${path} failed: ${String(error)}`);
  }
  if (invalidLines.length > 0) {
    const count = invalidLines.length === 1 ? '1 line' : `${invalidLines.length} lines`;
    process.stderr.write(`tapgate audit: skipped ${count} of ${path} that are not audit records (first at line ${invalidLines[0]})\n`);
  }
  if (json) {
    process.stdout.write(matches.map((entry) => `${JSON.stringify(entry)}\n`).join(''));
  } else if (matches.length === 0) {
    process.stderr.write(`tapgate audit: no matching records in ${path}\n`);
  } else {
    process.stdout.write(formatTable(matches));
  }
  return 0;
}

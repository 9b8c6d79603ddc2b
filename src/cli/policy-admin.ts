// `tapgate policy check` and `tapgate policy reload`: validate a policy file offline, and make
// the running daemon re-read its own. Both print problems as FILE:LINE: message.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parsePolicy, PolicyError } from '../policy/config.js';
import { nameWarnings } from '../policy/warnings.js';
import { nssNameLookups } from '../sys/accounts.js';
import { DEFAULT_CONFIG } from '../protocol/paths.js';
import { call } from '../client/client.js';

function fail(message: string): number {
  process.stderr.write(`tapgate: ${message}\n`);
  return 1;
}

function printWarnings(warnings: readonly string[]): void {
  for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
}

/**
 * Validates a policy file with the daemon's own parser and prints every problem. The daemon is
 * not contacted. Exit status 0 when the file is valid (warnings allowed), 1 otherwise.
 */
export function policyCheckCommand(argv: string[]): number {
  const { positionals } = parseArgs({ args: argv, options: {}, allowPositionals: true, strict: true });
  if (positionals.length > 1) return fail(`policy check takes at most one FILE, got ${positionals.length}`);
  const path = positionals[0] ?? DEFAULT_CONFIG;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const reasons: Record<string, string> = { ENOENT: 'not found', EACCES: 'permission denied', EISDIR: 'is a directory' };
    const code = (error as NodeJS.ErrnoException).code ?? '';
    return fail(`${path}: ${reasons[code] ?? String(error)}`);
  }
  try {
    const policy = parsePolicy(text, path);
    // Bridges are not checked here: they live in the daemon's network namespace, not this shell's.
    const warnings = [...policy.warnings, ...nameWarnings(policy, nssNameLookups())];
    printWarnings(warnings);
    const count = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;
    process.stdout.write(`${path}: valid: ${count(policy.networks.size, 'network')}, ${count(policy.rules.length, 'rule')}, ${count(warnings.length, 'warning')}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof PolicyError)) throw error;
    for (const problem of error.problems) process.stderr.write(`${problem}\n`);
    process.stdout.write(`${path}: invalid: ${error.problems.length} error${error.problems.length === 1 ? '' : 's'}; a daemon keeps its previous policy until this is fixed\n`);
    return 1;
  }
}

/**
 * Asks the running daemon to re-read its policy file (root only). When the file is invalid the
 * daemon keeps the previous policy and its reply lists the problems. Exit status 0 on reload.
 */
export function policyReloadCommand(argv: string[]): number {
  parseArgs({ args: argv, options: {}, strict: true });
  if (process.getuid?.() !== 0) return fail('only root may reload the policy; run "sudo tapgate policy reload"');
  const { reply } = call({ op: 'reload' });
  if (!reply.ok) return fail(reply.error.message);
  const result = reply as unknown as { path: string; networks: number; rules: number; warnings: string[] };
  printWarnings(result.warnings);
  process.stdout.write(`reloaded ${result.path}: ${result.networks} networks, ${result.rules} rules\n`);
  return 0;
}

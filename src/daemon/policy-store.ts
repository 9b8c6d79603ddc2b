// Loads the policy file and keeps the last valid policy in force across reloads.

import { readFileSync } from 'node:fs';
import { parsePolicy, PolicyError } from '../policy/config.js';
import type { Policy } from '../policy/types.js';

export type PolicyState = { ok: true; policy: Policy } | { ok: false; error: string };

/**
 * Reads and parses a policy file. A missing or unreadable file is reported with the path and
 * the reason (`not found`, `permission denied`), never as a parse error.
 */
export function loadPolicy(path: string): PolicyState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : String(error);
    return { ok: false, error: `Policy file ${path}: ${reason}` };
  }
  try {
    return { ok: true, policy: parsePolicy(text, path) };
  } catch (error) {
    if (error instanceof PolicyError) return { ok: false, error: error.message };
    throw error;
  }
}

// Paths and preconditions shared by the privileged tests.

import { accessSync, constants, cpSync, mkdtempSync, chmodSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';

/** The repository root: test files run from dist/test/..., three levels below it. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Returns why privileged tests cannot run here, or undefined when they can. */
export function privilegedSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root: creates network namespaces, bridges and test users';
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    return 'needs /dev/net/tun';
  }
  return undefined;
}

function traversableByOthers(path: string): boolean {
  for (let current = path; ; current = dirname(current)) {
    if ((statSync(current).mode & 0o001) === 0) return false;
    if (current === dirname(current)) return true;
  }
}

let stagedRoot: string | undefined;

/**
 * Returns a directory that unprivileged test users can read, holding dist/, the runtime
 * node_modules and the cached guest. That is the checkout itself when every parent directory
 * lets others through; otherwise (a checkout under /root, say) a copy made once per process.
 */
export function userReadableRoot(): string {
  if (traversableByOthers(REPO_ROOT)) return REPO_ROOT;
  if (stagedRoot) return stagedRoot;
  const root = mkdtempSync(join(tmpdir(), 'tapgate-stage-'));
  chmodSync(root, 0o755);
  for (const part of ['dist', 'bin', 'node_modules/koffi', 'node_modules/@koromix', 'node_modules/smol-toml', '.cache/guest']) {
    try {
      cpSync(join(REPO_ROOT, part), join(root, part), { recursive: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  stagedRoot = root;
  return root;
}

/** The compiled `tapgate` entry point under a user-readable root. */
export function tapgateScript(root = userReadableRoot()): string {
  return join(root, 'dist', 'src', 'cli', 'main-tapgate.js');
}

/** The compiled `tapgate-helper` entry point under a user-readable root. */
export function helperScript(root = userReadableRoot()): string {
  return join(root, 'dist', 'src', 'cli', 'main-helper.js');
}

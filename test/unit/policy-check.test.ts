// `tapgate policy check FILE`: diagnostics as FILE:LINE: message and exit status 0/1, offline.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../support/env.js';

const directory = mkdtempSync(join(tmpdir(), 'tapgate-policy-check-'));
after(() => rmSync(directory, { recursive: true, force: true }));

function policyCheck(text: string | undefined, name = 'tapgate.toml') {
  const path = join(directory, name);
  if (text !== undefined) writeFileSync(path, text);
  const result = spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'cli', 'main-tapgate.js'), 'policy', 'check', path], {
    encoding: 'utf8', env: { ...process.env, TAPGATE_SOCKET: join(directory, 'no-daemon.sock') },
  });
  return { ...result, path };
}

test('policy check accepts valid file', () => {
  const result = policyCheck('[networks.lab]\nbridge = "br-lab"\n[[allow]]\ngroups = ["root"]\nnetworks = ["lab"]\n', 'valid.toml');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout, `${result.path}: valid: 1 network, 1 rule, 0 warnings\n`);
  assert.equal(result.stderr, '');
});

test('policy check lists every error with line', () => {
  const result = policyCheck([
    '[networks.lab]',
    'bridge = "br-lab"',
    '[[allow]]',
    'users = ["alice"]',
    'networks = ["lab", "nowhere"]',
    'max_taps = -1',
    '[[deny]]',
    'groups = ["*"]',
  ].join('\n'), 'invalid.toml');
  assert.equal(result.status, 1);
  const lines = result.stderr.trim().split('\n');
  assert.ok(lines.includes(`${result.path}:3: [[allow]] names network "nowhere", which no [networks.nowhere] table defines`), result.stderr);
  assert.ok(lines.includes(`${result.path}:3: [[allow]] max_taps must be an integer from 0 to 65536, got -1`), result.stderr);
  assert.ok(lines.includes(`${result.path}:7: [[deny]] needs networks = [...]; use ["*"] for every network`), result.stderr);
  assert.equal(lines.length, 3);
  assert.match(result.stdout, /invalid: 3 errors/);
});

test('policy check reports TOML syntax errors', () => {
  const result = policyCheck('[networks.lab]\nbridge = "br-lab\n', 'syntax.toml');
  assert.equal(result.status, 1);
  assert.match(result.stderr, new RegExp(`^${result.path.replace(/[.]/g, '\\.')}:2: `));
});

test('policy check reports missing file', () => {
  const result = policyCheck(undefined, 'absent.toml');
  assert.equal(result.status, 1);
  assert.equal(result.stderr, `tapgate: ${result.path}: not found\n`);
});

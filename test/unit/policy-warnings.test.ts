// Unit tests of policy warnings (unknown names, missing bridges, limits on deny rules) and of
// numeric uids and gids in rules.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../support/env.js';
import { PolicyError, parsePolicy } from '../../src/policy/config.js';
import { decide } from '../../src/policy/decide.js';
import { bridgeWarnings, nameWarnings, type NameLookups } from '../../src/policy/warnings.js';
import type { Identity } from '../../src/policy/types.js';

const PATH = '/etc/tapgate/tapgate.toml';

const NETWORKS = `[networks.lab]
bridge = "br-lab"
[networks.dmz]
bridge = "br-dmz"
`;

/** Look-ups that know only the names given. */
function knowing(users: string[], groups: string[]): NameLookups {
  return { userExists: (name) => users.includes(name), groupExists: (name) => groups.includes(name) };
}

function problemsOf(text: string): string[] {
  try {
    parsePolicy(text, PATH);
  } catch (error) {
    if (error instanceof PolicyError) return error.problems;
    throw error;
  }
  assert.fail('the policy parsed without errors');
}

function identity(overrides: Partial<Identity>): Identity {
  return { uid: 1000, gid: 1000, groups: [], user: 'alice', groupNames: ['alice'], pid: 1, ...overrides };
}

test('nameWarnings names unknown user with line', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = ["alice", "bbo"]\nnetworks = ["lab"]\n`, PATH);
  const warnings = nameWarnings(policy, knowing(['alice'], []));
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0]!.startsWith(`${PATH}:5: user "bbo" is not in the user database (NSS), so this allow rule matches nobody by that name`), warnings[0]);
});

test('nameWarnings names unknown group with line', () => {
  const policy = parsePolicy(`${NETWORKS}[[deny]]\ngroups = ["contractors"]\nnetworks = ["*"]\n`, PATH);
  const warnings = nameWarnings(policy, knowing([], []));
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0]!.startsWith(`${PATH}:5: group "contractors" is not in the group database (NSS), so this deny rule`), warnings[0]);
  assert.match(warnings[0]!, /denies nobody by that name/);
});

test('nameWarnings skips wildcards and numeric ids', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = ["*", "1001", 1002]\ngroups = ["*", 27]\nnetworks = ["lab"]\n`, PATH);
  const requested: string[] = [];
  const lookups: NameLookups = {
    userExists: (name) => { requested.push(name); return false; },
    groupExists: (name) => { requested.push(name); return false; },
  };
  assert.deepEqual(nameWarnings(policy, lookups), []);
  assert.deepEqual(requested, []);
});

test('nameWarnings is empty when all names resolve', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = ["alice"]\ngroups = ["kvm"]\nnetworks = ["lab"]\n`, PATH);
  assert.deepEqual(nameWarnings(policy, knowing(['alice'], ['kvm'])), []);
});

test('bridgeWarnings reports missing bridge', () => {
  const policy = parsePolicy(`${NETWORKS}`, PATH);
  const warnings = bridgeWarnings(policy, (name) => (name === 'br-lab' ? { kind: 'bridge' } : undefined));
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0]!.startsWith(`${PATH}:3: bridge br-dmz of network "dmz" does not exist`), warnings[0]);
});

test('bridgeWarnings reports device that is not a bridge', () => {
  const policy = parsePolicy(`${NETWORKS}`, PATH);
  const warnings = bridgeWarnings(policy, (name) => (name === 'br-lab' ? { kind: 'veth' } : {}));
  assert.equal(warnings.length, 2);
  assert.ok(warnings[0]!.startsWith(`${PATH}:1: interface br-lab of network "lab" is a veth device, not a bridge`), warnings[0]);
  assert.match(warnings[1]!, /br-dmz of network "dmz" is a plain device, not a bridge/);
});

test('parsePolicy warns on limits in deny rule', () => {
  const policy = parsePolicy(`${NETWORKS}[[deny]]\nusers = ["bob"]\nnetworks = ["lab"]\nmax_taps = 2\nvhost = true\n`, PATH);
  assert.equal(policy.warnings.length, 1);
  assert.equal(policy.warnings[0], `${PATH}:5: [[deny]] sets max_taps, vhost, which have no effect on a deny rule; limits apply only to [[allow]] rules, so remove them here`);
});

test('parsePolicy warns on one limit in deny rule', () => {
  const policy = parsePolicy(`${NETWORKS}[[deny]]\nusers = ["bob"]\nnetworks = ["lab"]\nmax_queues = 2\n`, PATH);
  assert.deepEqual(policy.warnings, [`${PATH}:5: [[deny]] sets max_queues, which has no effect on a deny rule; limits apply only to [[allow]] rules, so remove it here`]);
});

test('parsePolicy allows limits in allow rule silently', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = ["bob"]\nnetworks = ["lab"]\nmax_taps = 2\n`, PATH);
  assert.deepEqual(policy.warnings, []);
});

test('parsePolicy accepts integer uids and gids', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = [1001, "alice"]\ngroups = [27]\nnetworks = ["lab"]\n`, PATH);
  assert.deepEqual(policy.rules[0]!.users, ['1001', 'alice']);
  assert.deepEqual(policy.rules[0]!.groups, ['27']);
});

test('integer uid rule matches that uid', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\nusers = [1001]\nnetworks = ["lab"]\n`, PATH);
  assert.equal(decide(policy, identity({ uid: 1001, user: undefined }), 'lab').allowed, true);
  assert.equal(decide(policy, identity({ uid: 1002, user: undefined }), 'lab').allowed, false);
});

test('integer gid rule matches supplementary group', () => {
  const policy = parsePolicy(`${NETWORKS}[[allow]]\ngroups = [27]\nnetworks = ["lab"]\n`, PATH);
  assert.equal(decide(policy, identity({ groups: [27], groupNames: [] }), 'lab').allowed, true);
  assert.equal(decide(policy, identity({ groups: [28], groupNames: [] }), 'lab').allowed, false);
});

test('parsePolicy rejects negative uid', () => {
  const problems = problemsOf(`${NETWORKS}[[allow]]\nusers = [-1]\nnetworks = ["lab"]\n`);
  assert.deepEqual(problems, [`${PATH}:5: [[allow]] users contains -1, which is not a valid id: write an integer from 0 to 4294967294, or a name in quotes`]);
});

test('parsePolicy rejects fractional gid', () => {
  const problems = problemsOf(`${NETWORKS}[[allow]]\ngroups = [2.5]\nnetworks = ["lab"]\n`);
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /groups contains 2\.5, which is not a valid id/);
});

test('parsePolicy rejects uid above uid_t range', () => {
  const problems = problemsOf(`${NETWORKS}[[allow]]\nusers = [4294967295]\nnetworks = ["lab"]\n`);
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /users contains 4294967295, which is not a valid id/);
});

test('parsePolicy rejects empty and boolean entries', () => {
  const problems = problemsOf(`${NETWORKS}[[allow]]\nusers = ["", true]\nnetworks = ["lab"]\n`);
  assert.equal(problems.length, 2);
  assert.match(problems[0]!, /users contains "": each entry must be a non-empty name or a numeric id, like \["alice", 1001\]/);
  assert.match(problems[1]!, /users contains true: each entry/);
});

test('parsePolicy rejects users that is not a list', () => {
  const problems = problemsOf(`${NETWORKS}[[allow]]\nusers = 1001\nnetworks = ["lab"]\n`);
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /users must be a list of names or numeric ids, like \["alice", 1001\]; got 1001/);
});

test('policy check prints name warnings', () => {
  const directory = mkdtempSync(join(tmpdir(), 'tapgate-policy-warnings-'));
  after(() => rmSync(directory, { recursive: true, force: true }));
  const path = join(directory, 'tapgate.toml');
  writeFileSync(path, `${NETWORKS}[[allow]]\nusers = ["root", "tgnosuchuser"]\ngroups = ["tgnosuchgroup", 0]\nnetworks = ["lab"]\n`);
  const result = spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'cli', 'main-tapgate.js'), 'policy', 'check', path], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 2, result.stderr);
  assert.ok(lines[0]!.startsWith(`warning: ${path}:5: user "tgnosuchuser" is not in the user database`), lines[0]);
  assert.ok(lines[1]!.startsWith(`warning: ${path}:5: group "tgnosuchgroup" is not in the group database`), lines[1]);
  assert.equal(result.stdout, `${path}: valid: 2 networks, 1 rule, 2 warnings\n`);
});

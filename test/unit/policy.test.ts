// Unit tests of policy parsing (TOML to Policy, errors as FILE:LINE) and of the decision function.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyError, parsePolicy } from '../../src/policy/config.js';
import { decide, findNetwork } from '../../src/policy/decide.js';
import { DEFAULT_LIMITS, type Identity } from '../../src/policy/types.js';

const PATH = '/etc/tapgate/tapgate.toml';

const NETWORKS = `
[networks.lab]
bridge = "br-lab"

[networks.dmz]
bridge = "br-dmz"
`;

function identity(overrides: Partial<Identity> = {}): Identity {
  return { uid: 1000, gid: 1000, groups: [], user: 'alice', groupNames: ['alice'], pid: 4242, ...overrides };
}

function policyWith(rules: string): ReturnType<typeof parsePolicy> {
  return parsePolicy(`${NETWORKS}\n${rules}`, PATH);
}

/** Returns the PolicyError's problems for `text`, failing the test when it parses. */
function problemsOf(text: string): string[] {
  try {
    parsePolicy(text, PATH);
  } catch (error) {
    assert.ok(error instanceof PolicyError, `expected a PolicyError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('the policy parsed without errors');
}

test('decide allows by user name', () => {
  const policy = policyWith('[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\n');
  const decision = decide(policy, identity(), 'lab');
  assert.equal(decision.allowed, true);
  assert.equal(decision.code, 'allowed');
  assert.equal(decision.rule?.source, `${PATH}:8`);
  assert.equal(decide(policy, identity({ user: 'bob', uid: 1001 }), 'lab').allowed, false);
});

test('decide allows by uid', () => {
  const policy = policyWith('[[allow]]\nusers = ["1000"]\nnetworks = ["lab"]\n');
  assert.equal(decide(policy, identity({ user: undefined }), 'lab').allowed, true);
  assert.equal(decide(policy, identity({ uid: 1001, user: undefined }), 'lab').allowed, false);
});

test('decide allows by group name', () => {
  const policy = policyWith('[[allow]]\ngroups = ["kvm"]\nnetworks = ["lab"]\n');
  assert.equal(decide(policy, identity({ groupNames: ['alice', 'kvm'] }), 'lab').allowed, true);
  assert.equal(decide(policy, identity(), 'lab').allowed, false);
});

test('decide allows by primary gid', () => {
  const policy = policyWith('[[allow]]\ngroups = ["2000"]\nnetworks = ["lab"]\n');
  assert.equal(decide(policy, identity({ gid: 2000, groupNames: [] }), 'lab').allowed, true);
  assert.equal(decide(policy, identity({ gid: 2001, groupNames: [] }), 'lab').allowed, false);
});

test('decide allows by supplementary gid', () => {
  const policy = policyWith('[[allow]]\ngroups = ["3000"]\nnetworks = ["lab"]\n');
  assert.equal(decide(policy, identity({ groups: [27, 3000], groupNames: [] }), 'lab').allowed, true);
  assert.equal(decide(policy, identity({ groups: [27], groupNames: [] }), 'lab').allowed, false);
});

test('decide lets deny win over an earlier allow', () => {
  const policy = policyWith('[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\n\n[[deny]]\nname = "no-lab"\nusers = ["alice"]\nnetworks = ["lab"]\n');
  const decision = decide(policy, identity(), 'lab');
  assert.equal(decision.allowed, false);
  assert.equal(decision.code, 'denied');
  assert.equal(decision.rule?.kind, 'deny');
  assert.equal(decision.limits, undefined);
  assert.match(decision.reason, /deny rule "no-lab" at \/etc\/tapgate\/tapgate\.toml:12/);
});

test('decide lets deny win over a later allow', () => {
  const policy = policyWith('[[deny]]\ngroups = ["*"]\nnetworks = ["dmz"]\n\n[[allow]]\nusers = ["alice"]\nnetworks = ["*"]\n');
  assert.equal(decide(policy, identity(), 'dmz').allowed, false);
  assert.equal(decide(policy, identity(), 'lab').allowed, true);
});

test('decide default deny suggests an allow rule', () => {
  const policy = policyWith('[[allow]]\nusers = ["bob"]\nnetworks = ["lab"]\n');
  const decision = decide(policy, identity(), 'lab');
  assert.equal(decision.allowed, false);
  assert.equal(decision.code, 'denied');
  assert.equal(decision.rule, undefined);
  assert.match(decision.reason, /network "lab"/);
  assert.match(decision.reason, /user alice \(uid 1000\)/);
  assert.ok(decision.reason.includes(PATH));
  assert.ok(decision.reason.includes('[[allow]] rule with users = ["alice"]'));
  assert.ok(decision.reason.includes('networks = ["lab"]'));
});

test('decide default deny names the uid without a user name', () => {
  const decision = decide(policyWith(''), identity({ uid: 1234, user: undefined }), 'dmz');
  assert.ok(decision.reason.includes('users = ["1234"]'));
  assert.ok(decision.reason.includes('networks = ["dmz"]'));
});

test('decide resolves a network by its bridge name', () => {
  const policy = policyWith('[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\n');
  const decision = decide(policy, identity(), 'br-lab');
  assert.equal(decision.allowed, true);
  assert.equal(decision.network?.name, 'lab');
  assert.equal(findNetwork(policy, 'br-dmz')?.name, 'dmz');
});

test('decide reports an unknown network', () => {
  const policy = policyWith('[[allow]]\nusers = ["*"]\nnetworks = ["*"]\n');
  const decision = decide(policy, identity(), 'br-other');
  assert.equal(decision.allowed, false);
  assert.equal(decision.code, 'unknown-network');
  assert.equal(decision.network, undefined);
  assert.match(decision.reason, /"br-other"/);
  assert.match(decision.reason, /lab \(bridge br-lab\), dmz \(bridge br-dmz\)/);
});

test('decide matches wildcard users, groups and networks', () => {
  const users = policyWith('[[allow]]\nusers = ["*"]\nnetworks = ["*"]\n');
  assert.equal(decide(users, identity({ uid: 5, user: undefined, groupNames: [] }), 'dmz').allowed, true);
  const groups = policyWith('[[allow]]\ngroups = ["*"]\nnetworks = ["lab"]\n');
  assert.equal(decide(groups, identity({ uid: 6, user: 'carol', groupNames: [] }), 'lab').allowed, true);
  assert.equal(decide(groups, identity({ uid: 6, user: 'carol', groupNames: [] }), 'dmz').allowed, false);
});

test('decide takes limits from the first matching allow', () => {
  const policy = policyWith([
    '[[allow]]\nusers = ["bob"]\nnetworks = ["lab"]\nmax_taps = 1\n',
    '[[allow]]\nname = "first"\ngroups = ["alice"]\nnetworks = ["lab"]\nmax_taps = 2\nmax_queues = 4\nvhost = true\n',
    '[[allow]]\nusers = ["alice"]\nnetworks = ["*"]\nmax_taps = 9\nunfiltered = true\n',
  ].join('\n'));
  const decision = decide(policy, identity(), 'lab');
  assert.equal(decision.rule?.label, 'first');
  assert.deepEqual(decision.limits, { maxTaps: 2, maxQueues: 4, vhost: true, unfiltered: false });
  assert.deepEqual(decide(policy, identity(), 'dmz').limits, { maxTaps: 9, maxQueues: DEFAULT_LIMITS.maxQueues, vhost: false, unfiltered: true });
});

test('parsePolicy fills default limits', () => {
  const policy = policyWith('[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\n');
  assert.deepEqual(policy.rules[0].limits, DEFAULT_LIMITS);
  assert.equal(policy.networks.get('lab')?.source, `${PATH}:2`);
});

test('parsePolicy reads the audit log path', () => {
  const policy = parsePolicy('[daemon]\naudit_log = "/var/log/tapgate/audit.log"\n', PATH);
  assert.equal(policy.daemon.auditLog, '/var/log/tapgate/audit.log');
  assert.deepEqual(problemsOf('[daemon]\naudit_log = "audit.log"\n'), [`${PATH}:1: [daemon] audit_log must be an absolute path, got "audit.log"`]);
});

test('parsePolicy rejects an unknown key with FILE:LINE', () => {
  const problems = problemsOf(`${NETWORKS}\n[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\npath = "/etc/shadow"\n`);
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:8: `));
  assert.match(problems[0], /unknown key "path" in \[\[allow\]\]/);
});

test('parsePolicy rejects an unknown network key', () => {
  const problems = problemsOf('\n[networks.lab]\nbridge = "br0"\ncolour = "red"\n');
  assert.deepEqual(problems, [`${PATH}:2: unknown key "colour" in [networks.lab]; expected one of: bridge`]);
});

test('parsePolicy rejects an unknown section', () => {
  const problems = problemsOf('[extra]\nx = 1\n');
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:1: unknown section "extra"`));
});

test('parsePolicy rejects values of the wrong type', () => {
  const problems = problemsOf(`${NETWORKS}\n[[allow]]\nusers = "alice"\ngroups = ["kvm"]\nnetworks = ["lab"]\nmax_taps = "x"\nmax_queues = 0\nvhost = 1\n`);
  assert.equal(problems.length, 4);
  for (const problem of problems) assert.ok(problem.startsWith(`${PATH}:8: `), problem);
  assert.match(problems[0], /users must be a list of names or numeric ids/);
  assert.match(problems[1], /max_taps must be an integer from 0 to 65536, got "x"/);
  assert.match(problems[2], /max_queues must be an integer from 1 to 256, got 0/);
  assert.match(problems[3], /vhost must be true or false, got 1/);
});

test('parsePolicy requires a bridge string', () => {
  const problems = problemsOf('[networks.lab]\nbridge = 7\n');
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:1: `));
  assert.match(problems[0], /needs bridge = "NAME"/);
});

test('parsePolicy rejects a 16-byte bridge name', () => {
  const problems = problemsOf('[daemon]\n\n[networks.lab]\nbridge = "isolated-net-01X"\n');
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:3: `), problems[0]);
  assert.match(problems[0], /"isolated-net-01X"/);
  assert.match(problems[0], /too long/);
  assert.match(problems[0], /16 bytes/);
});

test('parsePolicy accepts a 15-byte bridge name', () => {
  const policy = parsePolicy('[networks.lab]\nbridge = "isolated-net-01"\n', PATH);
  assert.equal(policy.networks.get('lab')?.bridge, 'isolated-net-01');
});

test('parsePolicy rejects a 16-byte network name', () => {
  const problems = problemsOf('[networks.isolated-net-01X]\nbridge = "br0"\n');
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:1: `));
  assert.match(problems[0], /network name "isolated-net-01X" is too long/);
});

test('parsePolicy rejects a duplicate bridge', () => {
  const problems = problemsOf('[networks.a]\nbridge = "br0"\n\n[networks.b]\nbridge = "br0"\n');
  assert.deepEqual(problems, [`${PATH}:4: bridge "br0" is already used by network "a"`]);
});

test('parsePolicy rejects a rule naming an undefined network', () => {
  const problems = problemsOf(`${NETWORKS}\n[[deny]]\nusers = ["alice"]\nnetworks = ["lab", "nosuch"]\n`);
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:8: `));
  assert.match(problems[0], /network "nosuch", which no \[networks\.nosuch\] table defines/);
});

test('parsePolicy requires users or groups and networks', () => {
  const problems = problemsOf('[[allow]]\nname = "empty"\n');
  assert.equal(problems.length, 2);
  assert.match(problems[0], /^\/etc\/tapgate\/tapgate\.toml:1: \[\[allow\]\] needs users = \[\.\.\.\] or groups = \[\.\.\.\]/);
  assert.match(problems[1], /^\/etc\/tapgate\/tapgate\.toml:1: \[\[allow\]\] needs networks = \[\.\.\.\]/);
});

test('parsePolicy reports a TOML syntax error with its line', () => {
  const problems = problemsOf('[networks.lab]\nbridge = "br0"\n\n[[allow]\nusers = ["alice"]\n');
  assert.equal(problems.length, 1);
  assert.ok(problems[0].startsWith(`${PATH}:4: `), problems[0]);
});

test('parsePolicy lists every problem in one error', () => {
  try {
    parsePolicy('[extra]\n[networks.a]\nbridge = "x/y"\n', PATH);
    assert.fail('the policy parsed without errors');
  } catch (error) {
    assert.ok(error instanceof PolicyError);
    assert.equal(error.problems.length, 2);
    assert.ok(error.message.startsWith(`${PATH}: 2 errors:`));
    assert.ok(error.message.includes(`${PATH}:1: unknown section "extra"`), error.message);
    assert.ok(error.message.includes(`${PATH}:2: bridge name "x/y" contains "/"`), error.message);
  }
});

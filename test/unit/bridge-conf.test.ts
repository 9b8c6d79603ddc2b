// Unit tests of QEMU bridge.conf support: the line grammar, QEMU's precedence, the include walk,
// the combination with tapgate's TOML rules, and the TOML import. Files live in memory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BridgeConfError, evaluateBridgeConf, loadBridgeConf, parseBridgeConf, type LoadedBridgeConf, type PolicyFileReader,
} from '../../src/policy/bridge-conf.js';
import { decideRequest } from '../../src/policy/bridge-conf-decide.js';
import { decide } from '../../src/policy/decide.js';
import { parsePolicy, PolicyError } from '../../src/policy/config.js';
import { convertBridgeConf, type Audience } from '../../src/cli/policy.js';
import type { Identity } from '../../src/policy/types.js';

const MAIN = '/etc/qemu/bridge.conf';
const TOML_PATH = '/etc/tapgate/tapgate.toml';
const ALICE: Identity = { uid: 1001, gid: 1001, groups: [], user: 'alice', groupNames: ['alice'], pid: 4242 };

type FileTable = Record<string, string | Buffer | { error: string }>;

/** Returns a reader over `files`. A missing path fails with ENOENT, and `{ error }` with that code. */
function memoryReader(files: FileTable, reads: string[] = []): PolicyFileReader {
  return (path) => {
    reads.push(path);
    const entry = files[path];
    const code = entry === undefined ? 'ENOENT' : typeof entry === 'object' && !Buffer.isBuffer(entry) ? entry.error : undefined;
    if (code) throw Object.assign(new Error(`${code}: cannot open ${path}`), { code });
    return Buffer.isBuffer(entry) ? entry : Buffer.from(entry as string, 'utf8');
  };
}

function load(text: string | Buffer, extra: FileTable = {}): LoadedBridgeConf {
  return loadBridgeConf(MAIN, memoryReader({ [MAIN]: text, ...extra }));
}

function loadError(text: string | Buffer, extra: FileTable = {}): BridgeConfError {
  try {
    load(text, extra);
  } catch (error) {
    assert.ok(error instanceof BridgeConfError, String(error));
    return error;
  }
  assert.fail('expected a BridgeConfError');
}

function allowed(text: string | Buffer, bridge: string): boolean {
  return evaluateBridgeConf(load(text), bridge).allowed;
}

// The line-syntax table. QEMU read these inconsistently, so each outcome is pinned here.

test('line syntax a: allow br0', () => {
  assert.equal(allowed('allow br0\n', 'br0'), true);
});

test('line syntax b: tab separator', () => {
  assert.equal(allowed('allow\tbr0\n', 'br0'), true);
});

test('line syntax c: tab then inline comment', () => {
  const error = loadError('allow\tbr0 # lab\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: `), error.message);
  assert.ok(error.message.includes('"#"'), error.message);
});

test('line syntax d: inline comment', () => {
  const error = loadError('allow br0 # lab\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: `), error.message);
  assert.ok(error.message.includes('"#"'), error.message);
  assert.ok(error.message.includes('comment must be on a line of its own'), error.message);
});

test('line syntax e: padded inline comment', () => {
  const error = loadError('allow br0   # main uplink bridge\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: `), error.message);
  assert.ok(error.message.includes('"#"'), error.message);
});

test('line syntax f: missing argument', () => {
  const error = loadError('allow\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: "allow" needs one argument`), error.message);
});

test('line syntax g: keyword case', () => {
  const error = loadError('Allow br0\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: unknown keyword "Allow"`), error.message);
  assert.ok(error.message.includes('lower case'), error.message);
});

test('line syntax h: CRLF line end', () => {
  assert.equal(allowed('allow br0\r\n', 'br0'), true);
});

test('line syntax i: 5000-byte comment is one line', () => {
  // A reader with a 4 KiB buffer would parse the tail, "allow br9", as a rule of its own.
  const line = `# ${'x'.repeat(4094)}allow br9 ${'y'.repeat(5000 - 4096 - 10)}`;
  assert.equal(Buffer.byteLength(line), 5000);
  const conf = load(`${line}\nallow br0\n`);
  assert.deepEqual(conf.rules.map((rule) => rule.bridge), ['br0']);
  assert.equal(evaluateBridgeConf(conf, 'br9').allowed, false);
});

test('line syntax i: 5000-byte rule line is one line', () => {
  assert.equal(allowed(`allow br0${' '.repeat(4991)}\n`, 'br0'), true);
  const error = loadError(`allow ${'x'.repeat(4994)}\n`);
  assert.equal(error.problems.length, 1);
  assert.ok(error.message.startsWith(`${MAIN}:1: name too long`), error.message);
});

test('line syntax j: deny all before allow', () => {
  const conf = load('deny all\nallow br0\n');
  const verdict = evaluateBridgeConf(conf, 'br0');
  assert.equal(verdict.allowed, false);
  assert.equal(verdict.rule?.source, `${MAIN}:1`);
});

test('line syntax k: empty file', () => {
  const conf = load('');
  assert.deepEqual(conf.rules, []);
  assert.equal(evaluateBridgeConf(conf, 'br0').allowed, false);
  assert.equal(evaluateBridgeConf(conf, 'br0').rule, undefined);
  const decision = decideRequest(policyWith(''), ALICE, 'br0', memoryReader({ [MAIN]: '' }));
  assert.equal(decision.allowed, false);
  assert.ok(decision.reason.includes('no rule allows it'), decision.reason);
});

test('parseBridgeConf skips blank and comment lines', () => {
  const entries = parseBridgeConf(Buffer.from('\n   \n\t\n# one\n   # two\n#allow br9\n  allow \t br0  \t\n'), MAIN);
  assert.deepEqual(entries, [{ kind: 'allow', bridge: 'br0', source: `${MAIN}:7` }]);
});

test('parseBridgeConf reports every bad line', () => {
  const error = loadError('allow br0\nallow\nfoo br1\ndeny br2 extra\n');
  assert.deepEqual(error.problems.map((problem) => problem.split(': ')[0]), [`${MAIN}:2`, `${MAIN}:3`, `${MAIN}:4`]);
  assert.ok(error.message.includes('2 more errors'), error.message);
  assert.ok(error.problems[2]!.includes('"extra"'), error.problems[2]);
});

test('parseBridgeConf rejects a NUL byte', () => {
  const error = loadError(Buffer.from('allow br0\nallow b\0r1\n'));
  assert.ok(error.message.startsWith(`${MAIN}:2: NUL byte`), error.message);
});

test('parseBridgeConf rejects a NUL byte in a comment', () => {
  const error = loadError(Buffer.from('# a\0b\n'));
  assert.ok(error.message.startsWith(`${MAIN}:1: NUL byte`), error.message);
});

test('parseBridgeConf rejects invalid UTF-8', () => {
  const error = loadError(Buffer.from([...Buffer.from('allow br'), 0xff, 0x0a]));
  assert.ok(error.message.startsWith(`${MAIN}:1: invalid UTF-8`), error.message);
});

test('parseBridgeConf name length limit', () => {
  assert.equal(allowed('deny isolated-net-01\nallow all\n', 'isolated-net-01'), false);
  const error = loadError('allow all\ndeny isolated-net-01X\n');
  assert.ok(error.message.startsWith(`${MAIN}:2: name too long`), error.message);
  assert.ok(error.message.includes('"isolated-net-01X" is 16 bytes'), error.message);
});

test('parseBridgeConf counts name bytes, not characters', () => {
  const name = `br${'ü'.repeat(7)}`;
  assert.equal(name.length, 9);
  const error = loadError(`allow ${name}\n`);
  assert.ok(error.message.includes('name too long'), error.message);
});

test('parseBridgeConf rejects impossible interface names', () => {
  for (const name of ['a/b', 'a:b', '..']) {
    const error = loadError(`allow ${name}\n`);
    assert.ok(error.message.startsWith(`${MAIN}:1: invalid bridge name ${JSON.stringify(name)}`), error.message);
  }
});

test('parseBridgeConf rejects a relative include', () => {
  const error = loadError('include user.conf\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: include path must be absolute`), error.message);
  assert.ok(error.message.includes('"user.conf"'), error.message);
});

// QEMU's precedence: allowed iff an allow matches and no deny matches, in any order.

test('evaluateBridgeConf deny wins in any order', () => {
  assert.equal(allowed('allow br0\ndeny br0\n', 'br0'), false);
  assert.equal(allowed('deny br0\nallow br0\n', 'br0'), false);
  assert.equal(allowed('allow br0\ndeny all\n', 'br0'), false);
  assert.equal(allowed('allow all\ndeny br1\n', 'br0'), true);
  assert.equal(allowed('allow all\ndeny br1\n', 'br1'), false);
});

test('evaluateBridgeConf matches whole names only', () => {
  assert.equal(allowed('allow br0\n', 'br01'), false);
  assert.equal(allowed('allow br0\n', 'br'), false);
  assert.equal(allowed('allow br0\n', 'BR0'), false);
});

test('evaluateBridgeConf treats only lower-case all as wildcard', () => {
  assert.equal(allowed('allow ALL\n', 'br0'), false);
  assert.equal(allowed('allow ALL\n', 'ALL'), true);
  assert.equal(allowed('allow all\n', 'anything'), true);
});

// The include walk.

test('loadBridgeConf warns about a missing include', () => {
  const conf = load('allow br0\ninclude /etc/qemu/missing.conf\n');
  assert.deepEqual(conf.warnings, [`${MAIN}:2: include /etc/qemu/missing.conf: not found, skipped`]);
  assert.equal(evaluateBridgeConf(conf, 'br0').allowed, true);
  assert.deepEqual(conf.files, [MAIN]);
});

test('loadBridgeConf skips an unreadable include silently', () => {
  const conf = load('allow br0\ninclude /etc/qemu/user-c.conf\n', { '/etc/qemu/user-c.conf': { error: 'EACCES' } });
  assert.deepEqual(conf.warnings, []);
  assert.equal(evaluateBridgeConf(conf, 'br0').allowed, true);
  assert.deepEqual(conf.files, [MAIN]);
});

test('loadBridgeConf applies a readable include', () => {
  const conf = load('allow br0\ninclude /etc/qemu/user-c.conf\n', { '/etc/qemu/user-c.conf': 'deny all\n' });
  assert.equal(evaluateBridgeConf(conf, 'br0').allowed, false);
  assert.equal(evaluateBridgeConf(conf, 'br0').rule?.source, '/etc/qemu/user-c.conf:1');
  assert.deepEqual(conf.files, [MAIN, '/etc/qemu/user-c.conf']);
});

test('loadBridgeConf fails on an error inside an include', () => {
  const error = loadError('allow br0\ninclude /etc/qemu/user-a.conf\n', { '/etc/qemu/user-a.conf': 'allow br1\nallow br2 # lab\ndeny all\n' });
  assert.ok(error.message.startsWith('/etc/qemu/user-a.conf:2: '), error.message);
  assert.ok(error.message.includes('"#"'), error.message);
});

test('loadBridgeConf fails on other include read errors', () => {
  const error = loadError('include /etc/qemu/dir\n', { '/etc/qemu/dir': { error: 'EINVAL' } });
  assert.ok(error.message.startsWith(`${MAIN}:1: include /etc/qemu/dir: `), error.message);
});

test('loadBridgeConf rejects a self-include', () => {
  const error = loadError('include /etc/qemu/bridge.conf\n');
  assert.ok(error.message.startsWith(`${MAIN}:1: include cycle: ${MAIN} -> ${MAIN}`), error.message);
});

test('loadBridgeConf rejects an include cycle', () => {
  const error = loadError('include /etc/qemu/a.conf\n', { '/etc/qemu/a.conf': 'allow br1\ninclude /etc/qemu/b.conf\n', '/etc/qemu/b.conf': `include ${MAIN}\n` });
  assert.equal(error.message, `/etc/qemu/b.conf:1: include cycle: ${MAIN} -> /etc/qemu/a.conf -> /etc/qemu/b.conf -> ${MAIN}`);
});

/** A main file including /etc/qemu/level1.conf, which includes level2, ... down to level`depth`. */
function chain(depth: number): FileTable {
  const files: FileTable = {};
  for (let level = 1; level <= depth; level++) {
    files[`/etc/qemu/level${level}.conf`] = level < depth ? `include /etc/qemu/level${level + 1}.conf\n` : 'allow deep0\n';
  }
  return files;
}

test('loadBridgeConf accepts includes 8 deep', () => {
  const conf = load('include /etc/qemu/level1.conf\n', chain(8));
  assert.equal(conf.files.length, 9);
  assert.equal(evaluateBridgeConf(conf, 'deep0').allowed, true);
});

test('loadBridgeConf rejects includes 9 deep', () => {
  const error = loadError('include /etc/qemu/level1.conf\n', chain(9));
  assert.ok(error.message.startsWith('/etc/qemu/level8.conf:1: includes nested more than 8 deep: '), error.message);
  assert.ok(error.message.endsWith(`${MAIN} -> /etc/qemu/level1.conf -> /etc/qemu/level2.conf -> /etc/qemu/level3.conf -> ` +
    '/etc/qemu/level4.conf -> /etc/qemu/level5.conf -> /etc/qemu/level6.conf -> /etc/qemu/level7.conf -> /etc/qemu/level8.conf -> /etc/qemu/level9.conf'), error.message);
});

test('loadBridgeConf checks depth of a file seen before', () => {
  // level1 has a chain 7 deep below it, which fits at depth 1 but not at depth 2 through other.conf.
  const files = { ...chain(8), '/etc/qemu/other.conf': 'include /etc/qemu/level1.conf\n' };
  assert.equal(load('include /etc/qemu/level1.conf\n', files).files.length, 9);
  const error = loadError('include /etc/qemu/level1.conf\ninclude /etc/qemu/other.conf\n', files);
  assert.ok(error.message.startsWith('/etc/qemu/other.conf:1: includes nested more than 8 deep'), error.message);
});

test('loadBridgeConf reads a shared include once', () => {
  const reads: string[] = [];
  const files = {
    [MAIN]: 'include /etc/qemu/a.conf\ninclude /etc/qemu/b.conf\n',
    '/etc/qemu/a.conf': 'include /etc/qemu/common.conf\n',
    '/etc/qemu/b.conf': 'include /etc/qemu/common.conf\n',
    '/etc/qemu/common.conf': 'allow br0\n',
  };
  const conf = loadBridgeConf(MAIN, memoryReader(files, reads));
  assert.deepEqual(reads, [MAIN, '/etc/qemu/a.conf', '/etc/qemu/common.conf', '/etc/qemu/b.conf']);
  assert.equal(conf.rules.length, 1);
});

test('loadBridgeConf reports a missing main file', () => {
  const error = (() => {
    try {
      loadBridgeConf(MAIN, memoryReader({}));
    } catch (caught) {
      return caught as Error;
    }
    return assert.fail('expected an error');
  })();
  assert.ok(error instanceof BridgeConfError);
  assert.equal(error.message, `${MAIN}: not found`);
});

test('loadBridgeConf reports an unreadable main file', () => {
  assert.throws(() => loadBridgeConf(MAIN, memoryReader({ [MAIN]: { error: 'EACCES' } })), (error: Error) => {
    assert.ok(error.message.startsWith(`${MAIN}: permission denied`), error.message);
    return true;
  });
});

// The combination with tapgate's TOML rules.

function policyWith(extra: string): ReturnType<typeof parsePolicy> {
  return parsePolicy(`[bridge_conf]\npath = "${MAIN}"\nmax_taps = 2\n${extra}`, TOML_PATH);
}

test('decideRequest grants a bridge.conf bridge as a network', () => {
  const decision = decideRequest(policyWith(''), ALICE, 'br5', memoryReader({ [MAIN]: 'allow br5\n' }));
  assert.equal(decision.allowed, true);
  assert.equal(decision.network?.name, 'br5');
  assert.equal(decision.network?.bridge, 'br5');
  assert.equal(decision.network?.source, `${MAIN}:1`);
  assert.equal(decision.limits?.maxTaps, 2);
  assert.equal(decision.rule?.source, `${MAIN}:1`);
  assert.ok(decision.reason.includes(`policy files read: ${TOML_PATH}, ${MAIN}`), decision.reason);
});

test('decideRequest denial names bridge, user and files', () => {
  const files = { [MAIN]: 'allow virbr0\ninclude /etc/qemu/alice.conf\n', '/etc/qemu/alice.conf': 'allow br9\n' };
  const decision = decideRequest(policyWith(''), ALICE, 'br0', memoryReader(files));
  assert.equal(decision.allowed, false);
  assert.equal(decision.code, 'denied');
  for (const part of ['denied', 'bridge br0', 'user alice', 'uid 1001', TOML_PATH, MAIN, '/etc/qemu/alice.conf', 'no rule allows it']) {
    assert.ok(decision.reason.includes(part), `${part} missing from: ${decision.reason}`);
  }
});

test('decideRequest names the deny rule that decided', () => {
  const decision = decideRequest(policyWith(''), ALICE, 'br0', memoryReader({ [MAIN]: 'allow all\ndeny br0\n' }));
  assert.equal(decision.allowed, false);
  assert.ok(decision.reason.includes(`by "deny br0" at ${MAIN}:2`), decision.reason);
});

test('decideRequest lists include warnings', () => {
  const decision = decideRequest(policyWith(''), ALICE, 'br0', memoryReader({ [MAIN]: 'allow br0\ninclude /etc/qemu/gone.conf\n' }));
  assert.equal(decision.allowed, true);
  assert.ok(decision.reason.includes(`warnings: ${MAIN}:2: include /etc/qemu/gone.conf: not found, skipped`), decision.reason);
});

test('decideRequest lets a TOML deny win over bridge.conf', () => {
  const policy = policyWith('[[deny]]\nusers = ["alice"]\nnetworks = ["*"]\n');
  const decision = decideRequest(policy, ALICE, 'br5', memoryReader({ [MAIN]: 'allow all\n' }));
  assert.equal(decision.allowed, false);
  assert.equal(decision.rule?.kind, 'deny');
  assert.equal(decision.rule?.source, `${TOML_PATH}:4`);
});

test('decideRequest lets a bridge.conf deny win over TOML', () => {
  const policy = policyWith('[networks.lab]\nbridge = "br0"\n[[allow]]\ngroups = ["*"]\nnetworks = ["lab"]\n');
  const decision = decideRequest(policy, ALICE, 'lab', memoryReader({ [MAIN]: 'deny br0\n' }));
  assert.equal(decision.allowed, false);
  assert.ok(decision.reason.includes('bridge br0 (network "lab") is denied'), decision.reason);
});

test('decideRequest grants a TOML network without bridge.conf', () => {
  const policy = policyWith('[networks.lab]\nbridge = "br0"\n[[allow]]\ngroups = ["*"]\nnetworks = ["lab"]\nmax_taps = 5\n');
  const decision = decideRequest(policy, ALICE, 'br0', memoryReader({ [MAIN]: '' }));
  assert.equal(decision.allowed, true);
  assert.equal(decision.network?.name, 'lab');
  assert.equal(decision.limits?.maxTaps, 5);
});

test('decideRequest keeps TOML wildcards to defined networks', () => {
  const policy = policyWith('[[allow]]\ngroups = ["*"]\nnetworks = ["*"]\n');
  const decision = decideRequest(policy, ALICE, 'br5', memoryReader({ [MAIN]: '' }));
  assert.equal(decision.allowed, false);
  assert.ok(decision.reason.includes(`it is not a network in ${TOML_PATH}`), decision.reason);
});

test('decideRequest matches bridge.conf against the bridge name', () => {
  const policy = policyWith('[networks.lab]\nbridge = "br-lab"\n');
  assert.equal(decideRequest(policy, ALICE, 'lab', memoryReader({ [MAIN]: 'allow lab\n' })).allowed, false);
  assert.equal(decideRequest(policy, ALICE, 'lab', memoryReader({ [MAIN]: 'allow br-lab\n' })).allowed, true);
});

test('decideRequest reads bridge.conf on every request', () => {
  const files: FileTable = { [MAIN]: 'allow br0\n' };
  const reads: string[] = [];
  const read = memoryReader(files, reads);
  assert.equal(decideRequest(policyWith(''), ALICE, 'br0', read).allowed, true);
  files[MAIN] = 'deny br0\n';
  assert.equal(decideRequest(policyWith(''), ALICE, 'br0', read).allowed, false);
  assert.equal(reads.length, 2);
});

test('decideRequest fails closed on a missing bridge.conf', () => {
  assert.throws(() => decideRequest(policyWith(''), ALICE, 'virbr0', memoryReader({})), (error: Error) => {
    assert.ok(error instanceof BridgeConfError);
    assert.ok(error.message.startsWith(`${MAIN}: not found; bridge virbr0 is denied to user alice (uid 1001)`), error.message);
    assert.ok(!/parse/i.test(error.message), error.message);
    return true;
  });
});

test('decideRequest fails closed on a syntax error', () => {
  assert.throws(() => decideRequest(policyWith(''), ALICE, 'br0', memoryReader({ [MAIN]: 'allow br0\nallow br1 # x\n' })), (error: Error) => {
    assert.ok(error.message.startsWith(`${MAIN}:2: unexpected "#"`), error.message);
    assert.ok(error.message.includes('is denied to user alice (uid 1001)'), error.message);
    return true;
  });
});

test('decideRequest without bridge_conf equals decide', () => {
  const policy = parsePolicy('[networks.lab]\nbridge = "br0"\n[[allow]]\nusers = ["alice"]\nnetworks = ["lab"]\n', TOML_PATH);
  const read = memoryReader({});
  assert.deepEqual(decideRequest(policy, ALICE, 'lab', read), decide(policy, ALICE, 'lab'));
  assert.deepEqual(decideRequest(policy, ALICE, 'br5', read), decide(policy, ALICE, 'br5'));
});

// The [bridge_conf] table of the TOML policy.

test('parsePolicy reads bridge_conf', () => {
  const policy = parsePolicy(`[bridge_conf]\npath = "${MAIN}"\nmax_taps = 3\nvhost = true\n`, TOML_PATH);
  assert.equal(policy.bridgeConf?.path, MAIN);
  assert.equal(policy.bridgeConf?.limits.maxTaps, 3);
  assert.equal(policy.bridgeConf?.limits.vhost, true);
  assert.equal(policy.bridgeConf?.source, `${TOML_PATH}:1`);
});

test('parsePolicy rejects a relative bridge_conf path', () => {
  assert.throws(() => parsePolicy('[bridge_conf]\npath = "bridge.conf"\n', TOML_PATH), (error: Error) => {
    assert.ok(error instanceof PolicyError);
    assert.ok(error.message.startsWith(`${TOML_PATH}:1: [bridge_conf] needs path = "/etc/qemu/bridge.conf"`), error.message);
    assert.ok(error.message.includes('got "bridge.conf"'), error.message);
    return true;
  });
});

test('parsePolicy rejects unknown bridge_conf keys', () => {
  assert.throws(() => parsePolicy(`[bridge_conf]\npath = "${MAIN}"\nfile = "x"\n`, TOML_PATH), /unknown key "file" in \[bridge_conf\]; expected one of: path, max_taps/);
});

// The TOML import.

const EVERYONE_READS: Audience = { users: [], groups: ['*'], description: 'owner root, group root, mode 0644' };

function convert(files: FileTable, audiences: Record<string, Audience> = {}): { toml: string; problems: string[] } {
  return convertBridgeConf(MAIN, { read: memoryReader(files), audience: (path) => audiences[path] });
}

test('convertBridgeConf keeps QEMU decisions', () => {
  const text = 'allow br0\nallow br1\ndeny br1\ndeny br2\n';
  const converted = parsePolicy(convert({ [MAIN]: text }).toml, TOML_PATH);
  for (const bridge of ['br0', 'br1', 'br2']) {
    assert.equal(decide(converted, ALICE, bridge).allowed, allowed(text, bridge), bridge);
  }
  assert.deepEqual([...converted.networks.keys()].sort(), ['br0', 'br1', 'br2']);
});

test('convertBridgeConf maps deny all', () => {
  const converted = parsePolicy(convert({ [MAIN]: 'allow br0\ndeny all\n' }).toml, TOML_PATH);
  assert.equal(decide(converted, ALICE, 'br0').allowed, false);
});

test('convertBridgeConf notes the scope of allow all', () => {
  const { toml } = convert({ [MAIN]: 'allow all\ndeny br2\n' });
  assert.ok(toml.includes(`# "allow all" (${MAIN}:1) grants every bridge`), toml);
  const converted = parsePolicy(toml, TOML_PATH);
  assert.equal(decide(converted, ALICE, 'br2').allowed, false);
  assert.equal(converted.rules.find((rule) => rule.kind === 'allow')?.networks[0], '*');
});

test('convertBridgeConf suggests per-group rules for includes', () => {
  const files = { [MAIN]: 'allow br0\ninclude /etc/qemu/user-a.conf\n', '/etc/qemu/user-a.conf': 'allow br1\n' };
  const { toml, problems } = convert(files, { '/etc/qemu/user-a.conf': { users: [], groups: ['usera'], description: 'owner root, group usera, mode 0640' } });
  assert.deepEqual(problems, []);
  assert.ok(toml.includes(`# include /etc/qemu/user-a.conf (${MAIN}:2) applies only to users who can read it.`), toml);
  assert.ok(toml.includes('# groups = ["usera"]\n# networks = ["br1"]'), toml);
  assert.ok(toml.includes(`#   [bridge_conf]\n#   path = "${MAIN}"`), toml);
  const converted = parsePolicy(toml, TOML_PATH);
  assert.ok(converted.networks.has('br1'));
  assert.equal(decide(converted, ALICE, 'br1').allowed, false);
});

test('convertBridgeConf uncommented suggestion parses', () => {
  const files = { [MAIN]: 'include /etc/qemu/all.conf\n', '/etc/qemu/all.conf': 'allow br3\n' };
  const { toml } = convert(files, { '/etc/qemu/all.conf': EVERYONE_READS });
  const uncommented = toml.replace(/^# (\[\[|name =|groups =|users =|networks =)/gm, '$1');
  assert.equal(decide(parsePolicy(uncommented, TOML_PATH), ALICE, 'br3').allowed, true);
});

test('convertBridgeConf notes unreadable and missing includes', () => {
  const files = { [MAIN]: 'include /etc/qemu/secret.conf\ninclude /etc/qemu/gone.conf\n', '/etc/qemu/secret.conf': { error: 'EACCES' } };
  const { toml } = convert(files);
  assert.ok(toml.includes(`# include /etc/qemu/secret.conf (${MAIN}:1): could not be converted: permission denied`), toml);
  assert.ok(toml.includes(`# include /etc/qemu/gone.conf (${MAIN}:2): could not be converted: not found`), toml);
});

test('convertBridgeConf reports errors in includes', () => {
  const files = { [MAIN]: 'allow br0\ninclude /etc/qemu/bad.conf\n', '/etc/qemu/bad.conf': 'allow\n' };
  const { problems } = convert(files);
  assert.deepEqual(problems, ['/etc/qemu/bad.conf:1: "allow" needs one argument, a bridge name or all']);
});

test('convertBridgeConf rejects a bad main file', () => {
  assert.throws(() => convert({ [MAIN]: 'allow br0 # x\n' }), BridgeConfError);
});

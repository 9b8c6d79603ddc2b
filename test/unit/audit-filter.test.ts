// The pure parts of `tapgate audit`: --since parsing, record parsing, filters and the table.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuditUsageError, formatTable, matchesFilter, parseAuditLine, parseSince, type AuditEntry } from '../../src/cli/audit.js';

const NOW = new Date('2026-05-10T12:00:00Z');

function entry(fields: Partial<AuditEntry>): AuditEntry {
  return {
    time: '2026-05-10T11:00:00.000Z', event: 'decision', uid: 1000, user: 'alice', pid: 42, request: null,
    decision: 'granted', rule: 'allow rule "lab" at /etc/tapgate/tapgate.toml:12', reason: 'allowed',
    network: 'lab', bridge: 'br-lab', tap: 'tg0a1b2c3d', mac: '52:54:00:12:34:56', lease: '0a1b2c3d', ...fields,
  };
}

test('parseSince relative ages', () => {
  assert.equal(parseSince('30s', NOW).toISOString(), '2026-05-10T11:59:30.000Z');
  assert.equal(parseSince('10m', NOW).toISOString(), '2026-05-10T11:50:00.000Z');
  assert.equal(parseSince('2h', NOW).toISOString(), '2026-05-10T10:00:00.000Z');
  assert.equal(parseSince('1d', NOW).toISOString(), '2026-05-09T12:00:00.000Z');
  assert.equal(parseSince('1w', NOW).toISOString(), '2026-05-03T12:00:00.000Z');
  assert.equal(parseSince('0m', NOW).toISOString(), NOW.toISOString());
});

test('parseSince ISO times and dates', () => {
  assert.equal(parseSince('2026-05-01T12:00:00Z').toISOString(), '2026-05-01T12:00:00.000Z');
  assert.equal(parseSince('2026-05-01T12:00:00.250Z').toISOString(), '2026-05-01T12:00:00.250Z');
  assert.equal(parseSince('2026-05-01T14:00+02:00').toISOString(), '2026-05-01T12:00:00.000Z');
  // Without a zone, times and dates are local, as `date` prints them.
  assert.equal(parseSince('2026-05-01T12:00').getTime(), new Date(2026, 4, 1, 12, 0).getTime());
  assert.equal(parseSince('2026-05-01 12:00:30').getTime(), new Date(2026, 4, 1, 12, 0, 30).getTime());
  assert.equal(parseSince('2026-05-01').getTime(), new Date(2026, 4, 1).getTime());
});

test('parseSince rejects other forms', () => {
  for (const text of ['yesterday', '10', '10 m', '-1h', '5y', '2026-13-01T00:00Z', '2026/05/01', '']) {
    assert.throws(() => parseSince(text, NOW), (error: unknown) => {
      assert.ok(error instanceof AuditUsageError, `${JSON.stringify(text)}: ${String(error)}`);
      assert.ok(error.message.includes(`invalid --since ${JSON.stringify(text)}`));
      assert.ok(error.message.includes('10m'));
      return true;
    });
  }
});

test('parseAuditLine accepts records only', () => {
  const record = entry({});
  assert.deepEqual(parseAuditLine(JSON.stringify(record)), record);
  assert.equal(parseAuditLine('not json'), undefined);
  assert.equal(parseAuditLine('[1, 2]'), undefined);
  assert.equal(parseAuditLine('null'), undefined);
  assert.equal(parseAuditLine(JSON.stringify({ ...record, time: 'later' })), undefined);
  assert.equal(parseAuditLine(JSON.stringify({ ...record, uid: '1000' })), undefined);
  const { decision: _decision, ...withoutDecision } = record;
  assert.equal(parseAuditLine(JSON.stringify(withoutDecision)), undefined);
});

test('matchesFilter by time', () => {
  const record = entry({ time: '2026-05-10T11:00:00.000Z' });
  assert.equal(matchesFilter(record, {}), true);
  assert.equal(matchesFilter(record, { since: new Date('2026-05-10T11:00:00.000Z') }), true);
  assert.equal(matchesFilter(record, { since: new Date('2026-05-10T11:00:00.001Z') }), false);
  assert.equal(matchesFilter(record, { since: new Date('2026-05-10T10:59:59.999Z') }), true);
});

test('matchesFilter by user name or uid', () => {
  const named = entry({ uid: 1000, user: 'alice' });
  const unnamed = entry({ uid: 1000, user: null });
  assert.equal(matchesFilter(named, { user: 'alice' }), true);
  assert.equal(matchesFilter(named, { user: '1000' }), true);
  assert.equal(matchesFilter(named, { user: 'bob' }), false);
  assert.equal(matchesFilter(named, { user: '1001' }), false);
  // A record written without a name matches the uid that the name resolves to.
  assert.equal(matchesFilter(unnamed, { user: 'alice' }), false);
  assert.equal(matchesFilter(unnamed, { user: 'alice', uid: 1000 }), true);
  assert.equal(matchesFilter(unnamed, { user: 'alice', uid: 1001 }), false);
});

test('formatTable aligns columns', () => {
  const table = formatTable([
    entry({}),
    entry({ event: 'lease-end', decision: 'ended', user: null, uid: 1234, rule: null, reason: 'the tap was removed' }),
  ]);
  const lines = table.trimEnd().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0], /^TIME +DECISION +USER +NETWORK +TAP +RULE +REASON$/);
  assert.match(lines[1], /^2026-05-10T11:00:00\.000Z +granted +alice\(1000\) +lab +tg0a1b2c3d +\/etc\/tapgate\/tapgate\.toml:12 +allowed$/);
  assert.match(lines[2], / ended +1234 +lab +tg0a1b2c3d +- +the tap was removed$/);
  const reasonColumn = lines[0].indexOf('REASON');
  assert.equal(lines[1].indexOf('allowed'), reasonColumn);
  assert.equal(lines[2].indexOf('the tap was removed'), reasonColumn);
});

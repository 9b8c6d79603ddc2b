// The MAC address doctor tells an administrator to pin a bridge to.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pinnedBridgeMac } from '../../src/cli/doctor-checks.js';

test('pinned MAC keeps a real port address', () => {
  assert.equal(pinnedBridgeMac('br0', '52:54:00:12:34:56'), '52:54:00:12:34:56');
});

test('pinned MAC replaces zeros and the tap MAC', () => {
  for (const current of ['00:00:00:00:00:00', 'fe:ff:ff:ff:ff:ff']) {
    const pinned = pinnedBridgeMac('br0', current);
    assert.match(pinned, /^02(:[0-9a-f]{2}){5}$/, current);
    assert.equal(pinnedBridgeMac('br0', current), pinned, 'the same bridge gets the same address');
  }
  assert.notEqual(pinnedBridgeMac('br0', '00:00:00:00:00:00'), pinnedBridgeMac('br1', '00:00:00:00:00:00'));
});

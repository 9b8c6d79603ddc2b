// Unit tests of the wire protocol: request validation, framing and interface-name rules.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_QUEUES, RequestError, macProblem, parseRequest } from '../../src/protocol/messages.js';
import { FrameDecoder, FrameTooLargeError, MAX_REQUEST_BYTES, encodeFrame } from '../../src/protocol/wire.js';
import { checkInterfaceName, interfaceNameProblem } from '../../src/protocol/names.js';

function body(message: unknown): Buffer {
  return Buffer.from(typeof message === 'string' ? message : JSON.stringify(message), 'utf8');
}

/** Returns the RequestError that parseRequest raises for `message`, failing when it accepts it. */
function rejection(message: unknown): RequestError {
  try {
    parseRequest(body(message));
  } catch (error) {
    assert.ok(error instanceof RequestError, `expected a RequestError, got ${String(error)}`);
    return error;
  }
  assert.fail(`parseRequest accepted ${JSON.stringify(message)}`);
}

function openTap(fields: Record<string, unknown>): Record<string, unknown> {
  return { version: 1, op: 'open-tap', network: 'br0', ...fields };
}

test('parseRequest rejects invalid JSON', () => {
  const error = rejection('{"version": 1,');
  assert.equal(error.code, 'bad-request');
  assert.equal(error.message, 'Request is not valid JSON');
});

test('parseRequest rejects non-object JSON', () => {
  for (const text of ['[1]', 'null', '"open-tap"', '7']) {
    assert.equal(rejection(text).message, 'Request must be a JSON object', text);
  }
});

test('parseRequest rejects another protocol version', () => {
  const error = rejection({ version: 2, op: 'status' });
  assert.equal(error.code, 'unsupported-version');
  assert.match(error.message, /Unsupported protocol version 2/);
  assert.match(error.message, /version 1/);
  assert.equal(rejection({ op: 'status' }).code, 'unsupported-version');
  assert.equal(rejection({ version: '1', op: 'status' }).code, 'unsupported-version');
});

test('parseRequest rejects an unknown operation', () => {
  const error = rejection({ version: 1, op: 'delete-tap' });
  assert.equal(error.code, 'bad-request');
  assert.match(error.message, /Unknown operation "delete-tap"/);
  assert.match(error.message, /"open-tap", "status", "check", "diagnose" or "reload"/);
});

test('parseRequest accepts the three operations', () => {
  assert.deepEqual(parseRequest(body({ version: 1, op: 'status' })), { version: 1, op: 'status' });
  assert.deepEqual(parseRequest(body({ version: 1, op: 'check', network: 'lab' })), { version: 1, op: 'check', network: 'lab' });
  assert.deepEqual(parseRequest(body(openTap({}))), { version: 1, op: 'open-tap', network: 'br0', queues: 1, vnetHdr: false });
  assert.deepEqual(
    parseRequest(body(openTap({ queues: 4, vnetHdr: true, mac: '52:54:00:12:34:56' }))),
    { version: 1, op: 'open-tap', network: 'br0', queues: 4, vnetHdr: true, mac: '52:54:00:12:34:56' },
  );
});

test('parseRequest gives one message for an unknown field whatever its value', () => {
  const values = ['/etc/shadow', '/nonexistent', '/dev/ptmx', 7, null, { nested: '/etc/shadow' }];
  const messages = values.map((value) => rejection(openTap({ path: value })).message);
  for (const message of messages) assert.equal(message, 'Unsupported argument "path"');
  assert.equal(new Set(messages.map((message) => Buffer.from(message).toString('hex'))).size, 1);
});

test('parseRequest rejects fields of another operation', () => {
  assert.equal(rejection({ version: 1, op: 'status', network: 'br0' }).message, 'Unsupported argument "network"');
  assert.equal(rejection({ version: 1, op: 'check', network: 'br0', queues: 1 }).message, 'Unsupported argument "queues"');
});

test('parseRequest bounds queues', () => {
  assert.equal((parseRequest(body(openTap({ queues: MAX_QUEUES }))) as { queues: number }).queues, MAX_QUEUES);
  for (const queues of [0, -1, MAX_QUEUES + 1, 1.5, '2', true]) {
    const error = rejection(openTap({ queues }));
    assert.equal(error.message, `Field "queues" must be an integer from 1 to ${MAX_QUEUES}, got ${JSON.stringify(queues)}`);
  }
});

test('parseRequest requires a boolean vnetHdr', () => {
  assert.equal(rejection(openTap({ vnetHdr: 'yes' })).message, 'Field "vnetHdr" must be true or false');
});

test('parseRequest validates the MAC address', () => {
  const cases: [unknown, string][] = [
    ['52:54:00:12:34:5', 'must be six lower-case hex octets'],
    ['52:54:00:12:34:5G', 'must be six lower-case hex octets'],
    ['52:54:00:AB:34:56', 'must be six lower-case hex octets'],
    ['52-54-00-12-34-56', 'must be six lower-case hex octets'],
    ['01:00:5e:00:00:01', 'is a multicast address'],
    ['ff:ff:ff:ff:ff:ff', 'is a multicast address'],
    ['00:00:00:00:00:00', 'is all zeros'],
    [42, 'must be a string'],
  ];
  for (const [mac, problem] of cases) {
    const error = rejection(openTap({ mac }));
    assert.ok(error.message.startsWith(`Invalid MAC address ${JSON.stringify(mac)}: ${problem}`), error.message);
  }
  assert.equal(macProblem('02:00:00:00:00:01'), undefined);
});

test('parseRequest rejects bad bridge names naming the value', () => {
  const cases: [string, RegExp][] = [
    ['isolated-net-01X', /is too long: 16 bytes, the maximum is 15/],
    ['br 0', /whitespace/],
    ['br\t0', /whitespace/],
    ['a/b', /"\/"/],
    ['br:1', /":"/],
    ['.', /is "\." or "\.\."/],
    ['..', /is "\." or "\.\."/],
    ['', /is empty/],
  ];
  for (const [name, problem] of cases) {
    for (const op of ['open-tap', 'check']) {
      const error = rejection({ version: 1, op, network: name });
      assert.equal(error.code, 'bad-request');
      assert.ok(error.message.startsWith(`Invalid bridge or network name ${JSON.stringify(name)}: `), error.message);
      assert.match(error.message, problem);
    }
  }
});

test('parseRequest requires a string network', () => {
  assert.equal(rejection({ version: 1, op: 'open-tap' }).message, 'Field "network" must be a string');
  assert.equal(rejection({ version: 1, op: 'check', network: 5 }).message, 'Field "network" must be a string');
});

test('encodeFrame writes a big-endian length and JSON', () => {
  const frame = encodeFrame({ op: 'status', note: 'é' });
  const json = '{"op":"status","note":"é"}';
  assert.equal(frame.readUInt32BE(0), Buffer.byteLength(json));
  assert.equal(frame.length, 4 + Buffer.byteLength(json));
  assert.equal(frame.subarray(4).toString('utf8'), json);
});

test('FrameDecoder joins a frame split across chunks', () => {
  const frame = encodeFrame({ version: 1, op: 'status' });
  const decoder = new FrameDecoder(MAX_REQUEST_BYTES);
  const bodies: Buffer[] = [];
  for (let offset = 0; offset < frame.length; offset += 3) bodies.push(...decoder.push(frame.subarray(offset, offset + 3)));
  assert.equal(bodies.length, 1);
  assert.deepEqual(JSON.parse(bodies[0].toString('utf8')), { version: 1, op: 'status' });
  assert.equal(decoder.buffered, 0);
});

test('FrameDecoder splits several frames in one chunk', () => {
  const decoder = new FrameDecoder(MAX_REQUEST_BYTES);
  const third = encodeFrame({ n: 3 });
  const chunk = Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }), third.subarray(0, 6)]);
  const bodies = decoder.push(chunk);
  assert.deepEqual(bodies.map((frame) => JSON.parse(frame.toString('utf8'))), [{ n: 1 }, { n: 2 }]);
  assert.equal(decoder.buffered, 6);
  assert.deepEqual(decoder.push(third.subarray(6)).map((frame) => JSON.parse(frame.toString('utf8'))), [{ n: 3 }]);
});

test('FrameDecoder accepts an empty frame', () => {
  const bodies = new FrameDecoder(16).push(Buffer.from([0, 0, 0, 0]));
  assert.equal(bodies.length, 1);
  assert.equal(bodies[0].length, 0);
});

test('FrameDecoder rejects an oversized header before the body', () => {
  const decoder = new FrameDecoder(MAX_REQUEST_BYTES);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(MAX_REQUEST_BYTES + 1, 0);
  assert.deepEqual(decoder.push(header.subarray(0, 3)), []);
  assert.throws(() => decoder.push(header.subarray(3)), (error: unknown) => {
    assert.ok(error instanceof FrameTooLargeError);
    assert.equal(error.length, MAX_REQUEST_BYTES + 1);
    assert.equal(error.maximum, MAX_REQUEST_BYTES);
    assert.match(error.message, /16385 bytes exceeds the maximum of 16384 bytes/);
    return true;
  });
});

test('FrameDecoder accepts a frame of exactly the maximum', () => {
  const decoder = new FrameDecoder(8);
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 8]), Buffer.from('12345678')]);
  assert.deepEqual(decoder.push(frame).map((bytes) => bytes.toString()), ['12345678']);
});

test('interfaceNameProblem accepts 15 bytes of multi-byte UTF-8', () => {
  const name = 'ééééééé1';
  assert.equal(Buffer.byteLength(name), 15);
  assert.equal(interfaceNameProblem(name), undefined);
});

test('interfaceNameProblem counts bytes, not characters', () => {
  const name = 'éééééééé';
  assert.equal(name.length, 8);
  assert.equal(interfaceNameProblem(name), 'is too long: 16 bytes, the maximum is 15');
  assert.equal(interfaceNameProblem('🙂🙂🙂🙂'), 'is too long: 16 bytes, the maximum is 15');
});

test('interfaceNameProblem applies the kernel rules', () => {
  assert.equal(interfaceNameProblem('isolated-net-01'), undefined);
  assert.equal(interfaceNameProblem('...'), undefined);
  assert.equal(interfaceNameProblem('br-lab.100'), undefined);
  assert.equal(interfaceNameProblem('isolated-net-01X'), 'is too long: 16 bytes, the maximum is 15');
  assert.equal(interfaceNameProblem(''), 'is empty');
  assert.equal(interfaceNameProblem('.'), 'is "." or ".."');
  assert.equal(interfaceNameProblem('..'), 'is "." or ".."');
  for (const name of ['a/b', 'a:b', 'a\0b', 'a b', 'a\nb', 'a\u00a0b', ' ']) {
    assert.equal(interfaceNameProblem(name), 'contains "/", ":", a NUL byte or whitespace', JSON.stringify(name));
  }
});

test('checkInterfaceName throws a RangeError naming the value', () => {
  assert.throws(() => checkInterfaceName('isolated-net-01X', 'bridge'), {
    name: 'RangeError',
    message: 'Invalid bridge name "isolated-net-01X": is too long: 16 bytes, the maximum is 15',
  });
  assert.doesNotThrow(() => checkInterfaceName('br0', 'bridge'));
});

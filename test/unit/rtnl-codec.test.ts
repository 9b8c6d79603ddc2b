// Unit tests of the rtnetlink codec against byte layouts built by hand from the kernel headers:
// struct nlmsghdr and struct nlmsgerr (include/uapi/linux/netlink.h), struct nlattr and
// struct ifinfomsg (include/uapi/linux/rtnetlink.h). Integers are little-endian here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cString, decodeAttributes, decodeError, decodeLink, encodeAttribute, encodeLinkMessage, encodeMac,
  nested, splitMessages, u32, type NetlinkHeader,
} from '../../src/sys/rtnl-codec.js';
import {
  IFLA, IFLA_INFO, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS,
  NLM_F_CAPPED, NLM_F_REQUEST, RTM_NEWLINK,
} from '../../src/sys/constants.js';

/** Writes a struct nlattr by hand: u16 nla_len, u16 nla_type, payload, zero padding to 4. */
function rawAttribute(type: number, value: Buffer): Buffer {
  const padded = Buffer.alloc((4 + value.length + 3) & ~3);
  padded.writeUInt16LE(4 + value.length, 0);
  padded.writeUInt16LE(type, 2);
  value.copy(padded, 4);
  return padded;
}

/** Writes a struct nlmsghdr by hand. */
function rawHeader(length: number, type: number, flags: number, seq: number, pid: number): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(seq, 8);
  header.writeUInt32LE(pid, 12);
  return header;
}

function errorHeader(flags: number, payloadLength: number): NetlinkHeader {
  return { length: 16 + payloadLength, type: NLMSG_ERROR, flags, seq: 9, pid: 0 };
}

/** Builds a request as the kernel echoes it: a 16-byte header plus `bodyLength` bytes of body. */
function echoedRequest(bodyLength: number): Buffer {
  const body = Buffer.alloc(bodyLength, 0xab);
  return Buffer.concat([rawHeader(16 + bodyLength, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 9, 0), body]);
}

/** struct nlmsgerr: int error, then the echoed request, zero padding to 4, then the TLVs. */
function errorPayload(errno: number, echoed: Buffer, tlvs: Buffer[]): Buffer {
  const error = Buffer.alloc(4);
  error.writeInt32LE(-errno, 0);
  const unpadded = Buffer.concat([error, echoed]);
  const padding = Buffer.alloc(((unpadded.length + 3) & ~3) - unpadded.length);
  return Buffer.concat([unpadded, padding, ...tlvs]);
}

test('encodeAttribute pads the value to four bytes', () => {
  const attribute = encodeAttribute(IFLA.IFNAME, Buffer.from('abcde'));
  assert.equal(attribute.length, 12);
  assert.equal(attribute.readUInt16LE(0), 9);
  assert.equal(attribute.readUInt16LE(2), IFLA.IFNAME);
  assert.equal(attribute.toString('latin1', 4, 9), 'abcde');
  assert.deepEqual([...attribute.subarray(9)], [0, 0, 0]);
});

test('encodeAttribute adds no padding to aligned values', () => {
  assert.equal(encodeAttribute(IFLA.MTU, u32(1500)).length, 8);
  const empty = encodeAttribute(IFLA.IFALIAS, Buffer.alloc(0));
  assert.equal(empty.length, 4);
  assert.equal(empty.readUInt16LE(0), 4);
});

test('encodeAttribute copies the value', () => {
  const value = Buffer.from([1, 2, 3, 4]);
  const attribute = encodeAttribute(IFLA.MTU, value);
  value[0] = 99;
  assert.equal(attribute[4], 1);
});

test('decodeAttributes round-trips encoded attributes', () => {
  const values = [Buffer.from('x'), Buffer.from('four'), Buffer.alloc(0), Buffer.from('seven77'), u32(0xdeadbeef)];
  const encoded = Buffer.concat(values.map((value, index) => encodeAttribute(100 + index, value)));
  const decoded = decodeAttributes(encoded);
  assert.equal(decoded.length, values.length);
  values.forEach((value, index) => {
    assert.equal(decoded[index].type, 100 + index);
    assert.deepEqual(decoded[index].value, value);
  });
});

test('decodeAttributes ignores a truncated trailing attribute', () => {
  const whole = rawAttribute(IFLA.MTU, u32(1400));
  const truncated = rawAttribute(IFLA.IFNAME, Buffer.from('eth0\0')).subarray(0, 6);
  const decoded = decodeAttributes(Buffer.concat([whole, truncated]));
  assert.equal(decoded.length, 1);
  assert.equal(decoded[0].type, IFLA.MTU);
  assert.equal(decoded[0].value.readUInt32LE(0), 1400);
});

test('decodeAttributes ignores a trailing partial header', () => {
  const decoded = decodeAttributes(Buffer.concat([rawAttribute(IFLA.MTU, u32(9000)), Buffer.from([8, 0])]));
  assert.equal(decoded.length, 1);
});

test('decodeAttributes stops at a length below the header size', () => {
  const bogus = Buffer.from([2, 0, 1, 0]);
  const decoded = decodeAttributes(Buffer.concat([rawAttribute(IFLA.MTU, u32(1)), bogus, rawAttribute(IFLA.MTU, u32(2))]));
  assert.equal(decoded.length, 1);
  assert.equal(decoded[0].value.readUInt32LE(0), 1);
});

test('decodeAttributes masks the nested and byte-order flags', () => {
  const flagged = Buffer.concat([
    rawAttribute(IFLA.LINKINFO | 0x8000, Buffer.alloc(0)),
    rawAttribute(IFLA.MTU | 0x4000, u32(1)),
  ]);
  const decoded = decodeAttributes(flagged);
  assert.equal(decoded[0].type, IFLA.LINKINFO);
  assert.equal(decoded[1].type, IFLA.MTU);
});

test('nested sets NLA_F_NESTED and holds its members', () => {
  const attribute = nested(IFLA.LINKINFO, [encodeAttribute(IFLA_INFO.KIND, cString('tun'))]);
  assert.equal(attribute.readUInt16LE(2), IFLA.LINKINFO | 0x8000);
  const members = decodeAttributes(decodeAttributes(attribute)[0].value);
  assert.equal(members.length, 1);
  assert.equal(members[0].type, IFLA_INFO.KIND);
  assert.equal(members[0].value.toString('latin1'), 'tun\0');
});

test('encodeLinkMessage writes header and ifinfomsg', () => {
  const attributes = [encodeAttribute(IFLA.MTU, u32(1400)), encodeAttribute(IFLA.IFNAME, cString('br0'))];
  const message = encodeLinkMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 0x01020304, { family: 0, type: 1, index: 42, flags: 0x1, change: 0xffffffff }, attributes);
  assert.equal(message.length, 16 + 16 + 8 + 8);
  assert.equal(message.readUInt32LE(0), message.length);
  assert.equal(message.readUInt16LE(4), RTM_NEWLINK);
  assert.equal(message.readUInt16LE(6), NLM_F_REQUEST | NLM_F_ACK);
  assert.equal(message.readUInt32LE(8), 0x01020304);
  assert.equal(message.readUInt32LE(12), 0);
  assert.equal(message.readUInt8(16), 0);
  assert.equal(message.readUInt16LE(18), 1);
  assert.equal(message.readInt32LE(20), 42);
  assert.equal(message.readUInt32LE(24), 0x1);
  assert.equal(message.readUInt32LE(28), 0xffffffff);
  assert.deepEqual(message.subarray(32), Buffer.concat(attributes));
});

test('splitMessages splits a datagram at aligned boundaries', () => {
  // The first message's length (37) is not a multiple of 4, so the next one starts at offset 40.
  const first = Buffer.concat([rawHeader(37, RTM_NEWLINK, 0x2, 5, 77), Buffer.alloc(21, 1), Buffer.alloc(3)]);
  const second = Buffer.concat([rawHeader(20, 3, 0x2, 5, 77), Buffer.alloc(4)]);
  const messages = splitMessages(Buffer.concat([first, second]));
  assert.equal(messages.length, 2);
  assert.equal(messages[0].header.length, 37);
  assert.equal(messages[0].header.pid, 77);
  assert.equal(messages[0].payload.length, 21);
  assert.equal(messages[1].header.type, 3);
  assert.equal(messages[1].payload.length, 4);
});

test('splitMessages ignores a truncated trailing message', () => {
  const whole = Buffer.concat([rawHeader(20, 3, 0, 1, 0), Buffer.alloc(4)]);
  const truncated = rawHeader(64, RTM_NEWLINK, 0, 2, 0);
  assert.equal(splitMessages(Buffer.concat([whole, truncated])).length, 1);
});

test('decodeError reads the errno without extended ack', () => {
  const payload = errorPayload(22, echoedRequest(20), []);
  const error = decodeError(errorHeader(0, payload.length), payload);
  assert.equal(error.errno, 22);
  assert.equal(error.message, undefined);
});

test('decodeError reads an acknowledgement as errno 0', () => {
  const payload = errorPayload(0, echoedRequest(0), []);
  const error = decodeError(errorHeader(NLM_F_CAPPED, payload.length), payload);
  assert.equal(error.errno, 0);
  assert.equal(error.message, undefined);
});

test('decodeError finds the message after the full echoed request', () => {
  const tlvs = [rawAttribute(NLMSGERR_ATTR_OFFS, u32(36)), rawAttribute(NLMSGERR_ATTR_MSG, Buffer.from('mtu less than device minimum\0'))];
  const payload = errorPayload(22, echoedRequest(24), tlvs);
  const error = decodeError(errorHeader(NLM_F_ACK_TLVS, payload.length), payload);
  assert.equal(error.errno, 22);
  assert.equal(error.message, 'mtu less than device minimum');
});

test('decodeError pads an unaligned echoed request', () => {
  const tlvs = [rawAttribute(NLMSGERR_ATTR_MSG, Buffer.from('Unknown device type\0'))];
  const payload = errorPayload(95, echoedRequest(23), tlvs);
  const error = decodeError(errorHeader(NLM_F_ACK_TLVS, payload.length), payload);
  assert.equal(error.errno, 95);
  assert.equal(error.message, 'Unknown device type');
});

test('decodeError skips only the header when capped', () => {
  // A capped echo keeps the original nlmsg_len (here 16 + 64), yet only 16 bytes follow.
  const tlvs = [rawAttribute(NLMSGERR_ATTR_MSG, Buffer.from('Invalid MTU\0'))];
  const payload = errorPayload(22, echoedRequest(64).subarray(0, 16), tlvs);
  const error = decodeError(errorHeader(NLM_F_ACK_TLVS | NLM_F_CAPPED, payload.length), payload);
  assert.equal(error.errno, 22);
  assert.equal(error.message, 'Invalid MTU');
});

test('decodeError ignores TLVs without NLM_F_ACK_TLVS', () => {
  const payload = errorPayload(1, echoedRequest(0), [rawAttribute(NLMSGERR_ATTR_MSG, Buffer.from('ignored\0'))]);
  const error = decodeError(errorHeader(NLM_F_CAPPED, payload.length), payload);
  assert.equal(error.errno, 1);
  assert.equal(error.message, undefined);
});

/** struct ifinfomsg: u8 family, u8 pad, u16 type, s32 index, u32 flags, u32 change. */
function rawIfInfo(type: number, index: number, flags: number): Buffer {
  const info = Buffer.alloc(16);
  info.writeUInt16LE(type, 2);
  info.writeInt32LE(index, 4);
  info.writeUInt32LE(flags, 8);
  return info;
}

function u8(value: number): Buffer {
  return Buffer.from([value]);
}

test('decodeLink decodes a hand-built RTM_NEWLINK payload', () => {
  const linkinfo = Buffer.concat([
    rawAttribute(IFLA_INFO.KIND, Buffer.from('tun\0')),
    rawAttribute(IFLA_INFO.DATA | 0x8000, rawAttribute(1, u8(2))),
    rawAttribute(IFLA_INFO.SLAVE_KIND, Buffer.from('bridge\0')),
  ]);
  const payload = Buffer.concat([
    rawIfInfo(1, 7, 0x1003),
    rawAttribute(IFLA.IFNAME, Buffer.from('tg0a1b2c3d\0')),
    rawAttribute(IFLA.MTU, u32(1400)),
    rawAttribute(IFLA.MIN_MTU, u32(68)),
    rawAttribute(IFLA.MAX_MTU, u32(65521)),
    rawAttribute(IFLA.ADDRESS, Buffer.from([0x02, 0x00, 0x5e, 0x0a, 0xbc, 0xff])),
    rawAttribute(IFLA.MASTER, u32(3)),
    rawAttribute(IFLA.OPERSTATE, u8(6)),
    rawAttribute(IFLA.IFALIAS, Buffer.from('tapgate uid=1000\0')),
    rawAttribute(IFLA.NUM_TX_QUEUES, u32(4)),
    rawAttribute(IFLA.LINKINFO | 0x8000, linkinfo),
    rawAttribute(250, u32(12345)),
  ]);

  const link = decodeLink(payload);
  assert.equal(link.type, 1);
  assert.equal(link.index, 7);
  assert.equal(link.flags, 0x1003);

  assert.equal(link.name, 'tg0a1b2c3d');
  assert.equal(link.mtu, 1400);
  assert.equal(link.minMtu, 68);
  assert.equal(link.maxMtu, 65521);
  assert.equal(link.address, '02:00:5e:0a:bc:ff');
  assert.equal(link.master, 3);
  assert.equal(link.operstate, 'UP');
  assert.equal(link.alias, 'tapgate uid=1000');
  assert.equal(link.txQueues, 4);

  assert.equal(link.kind, 'tun');
  assert.equal(link.slaveKind, 'bridge');
});

test('decodeLink leaves absent attributes undefined', () => {
  const link = decodeLink(Buffer.concat([rawIfInfo(772, 1, 0x8), rawAttribute(IFLA.IFNAME, Buffer.from('lo\0'))]));
  assert.equal(link.name, 'lo');
  assert.equal(link.type, 772);
  assert.equal(link.mtu, undefined);
  assert.equal(link.master, undefined);
  assert.equal(link.kind, undefined);
  assert.equal(link.alias, undefined);
});

test('decodeLink maps an unknown operstate to UNKNOWN', () => {
  const link = decodeLink(Buffer.concat([rawIfInfo(1, 2, 0), rawAttribute(IFLA.OPERSTATE, u8(42))]));
  assert.equal(link.operstate, 'UNKNOWN');
});

test('decodeLink reads DOWN and LOWERLAYERDOWN operstates', () => {
  assert.equal(decodeLink(Buffer.concat([rawIfInfo(1, 2, 0), rawAttribute(IFLA.OPERSTATE, u8(2))])).operstate, 'DOWN');
  assert.equal(decodeLink(Buffer.concat([rawIfInfo(1, 2, 0), rawAttribute(IFLA.OPERSTATE, u8(3))])).operstate, 'LOWERLAYERDOWN');
});

test('encodeMac writes six octets', () => {
  assert.deepEqual([...encodeMac('02:ab:00:10:fe:09')], [0x02, 0xab, 0x00, 0x10, 0xfe, 0x09]);
});

test('cString appends one NUL byte', () => {
  assert.deepEqual([...cString('ab')], [0x61, 0x62, 0]);
});

test('decodeLink reads tun attributes of a tap', () => {
  const u8 = (value: number) => Buffer.from([value]);
  const data = Buffer.concat([
    encodeAttribute(1, u32(1000)), // IFLA_TUN_OWNER
    encodeAttribute(6, u8(1)), // IFLA_TUN_PERSIST
    encodeAttribute(8, u32(4)), // IFLA_TUN_NUM_QUEUES
    encodeAttribute(9, u32(1)), // IFLA_TUN_NUM_DISABLED_QUEUES
  ]);
  const linkinfo = nested(18, [encodeAttribute(1, cString('tun')), encodeAttribute(2, data)]);
  const header = Buffer.alloc(16);
  header.writeInt32LE(7, 4);
  const link = decodeLink(Buffer.concat([header, linkinfo]));
  assert.equal(link.kind, 'tun');
  assert.deepEqual(link.tun, { owner: 1000, persist: true, queues: 4, disabledQueues: 1 });
});

test('decodeLink leaves tun info out for other kinds', () => {
  const linkinfo = nested(18, [encodeAttribute(1, cString('veth')), encodeAttribute(2, encodeAttribute(6, Buffer.from([1])))]);
  const link = decodeLink(Buffer.concat([Buffer.alloc(16), linkinfo]));
  assert.equal(link.tun, undefined);
});

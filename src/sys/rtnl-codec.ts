// Encoding and decoding of rtnetlink link messages; pure functions over Buffers.
//
// Layouts from include/uapi/linux/netlink.h (struct nlmsghdr, 16 bytes; struct nlattr, 4 bytes
// plus payload padded to 4) and include/uapi/linux/rtnetlink.h (struct ifinfomsg, 16 bytes).
// Integers are in host byte order, little-endian on the supported architectures.

import { IFLA, IFLA_INFO, IFLA_TUN, NLMSGERR_ATTR_MSG, NLMSG_ERROR, NLM_F_ACK_TLVS, NLM_F_CAPPED, OPERSTATES } from './constants.js';

export const NLMSG_HDRLEN = 16;
export const IFINFOMSG_LEN = 16;
const NLA_HDRLEN = 4;
const NLA_F_NESTED = 1 << 15;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | (1 << 14));

function align4(length: number): number {
  return (length + 3) & ~3;
}

export interface NetlinkHeader {
  length: number;
  type: number;
  flags: number;
  seq: number;
  pid: number;
}

export interface Attribute {
  type: number;
  value: Buffer;
}

/** Encodes one attribute; `value` is copied and padded. */
export function encodeAttribute(type: number, value: Buffer): Buffer {
  const attribute = Buffer.alloc(align4(NLA_HDRLEN + value.length));
  attribute.writeUInt16LE(NLA_HDRLEN + value.length, 0);
  attribute.writeUInt16LE(type, 2);
  value.copy(attribute, NLA_HDRLEN);
  return attribute;
}

export function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value >>> 0, 0);
  return buffer;
}

export function cString(value: string): Buffer {
  return Buffer.concat([Buffer.from(value, 'utf8'), Buffer.alloc(1)]);
}

export function nested(type: number, attributes: Buffer[]): Buffer {
  return encodeAttribute(type | NLA_F_NESTED, Buffer.concat(attributes));
}

/** Splits a run of attributes; a truncated trailing attribute is ignored, as the kernel does. */
export function decodeAttributes(buffer: Buffer): Attribute[] {
  const attributes: Attribute[] = [];
  let offset = 0;
  while (offset + NLA_HDRLEN <= buffer.length) {
    const length = buffer.readUInt16LE(offset);
    if (length < NLA_HDRLEN || offset + length > buffer.length) break;
    attributes.push({ type: buffer.readUInt16LE(offset + 2) & NLA_TYPE_MASK, value: buffer.subarray(offset + NLA_HDRLEN, offset + length) });
    offset += align4(length);
  }
  return attributes;
}

export interface IfInfo {
  family: number;
  type: number;
  index: number;
  flags: number;
  change: number;
}

/** Encodes a complete netlink message: header, struct ifinfomsg and attributes. */
export function encodeLinkMessage(type: number, flags: number, seq: number, info: IfInfo, attributes: Buffer[]): Buffer {
  const body = Buffer.concat([encodeIfInfo(info), ...attributes]);
  const header = Buffer.alloc(NLMSG_HDRLEN);
  header.writeUInt32LE(NLMSG_HDRLEN + body.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(seq, 8);
  header.writeUInt32LE(0, 12);
  return Buffer.concat([header, body]);
}

function encodeIfInfo(info: IfInfo): Buffer {
  const buffer = Buffer.alloc(IFINFOMSG_LEN);
  buffer.writeUInt8(info.family, 0);
  buffer.writeUInt16LE(info.type, 2);
  buffer.writeInt32LE(info.index, 4);
  buffer.writeUInt32LE(info.flags >>> 0, 8);
  buffer.writeUInt32LE(info.change >>> 0, 12);
  return buffer;
}

/** Splits a datagram into its netlink messages. */
export function splitMessages(datagram: Buffer): { header: NetlinkHeader; payload: Buffer }[] {
  const messages: { header: NetlinkHeader; payload: Buffer }[] = [];
  let offset = 0;
  while (offset + NLMSG_HDRLEN <= datagram.length) {
    const length = datagram.readUInt32LE(offset);
    if (length < NLMSG_HDRLEN || offset + length > datagram.length) break;
    messages.push({
      header: {
        length,
        type: datagram.readUInt16LE(offset + 4),
        flags: datagram.readUInt16LE(offset + 6),
        seq: datagram.readUInt32LE(offset + 8),
        pid: datagram.readUInt32LE(offset + 12),
      },
      payload: datagram.subarray(offset + NLMSG_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  return messages;
}

/** The decoded form of an NLMSG_ERROR payload; `errno` 0 is an acknowledgement. */
export interface NetlinkError {
  errno: number;
  message: string | undefined;
}

export function decodeError(header: NetlinkHeader, payload: Buffer): NetlinkError {
  // The kernel stores a negated errno; `|| 0` keeps an acknowledgement at 0 rather than -0.
  const errno = -payload.readInt32LE(0) || 0;
  let message: string | undefined;
  if (header.flags & NLM_F_ACK_TLVS) {
    // The error payload echoes the request: only its header when NLM_F_CAPPED, else all of it.
    const echoed = header.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : payload.readUInt32LE(4);
    const tlvs = payload.subarray(align4(4 + echoed));
    const text = decodeAttributes(tlvs).find((attribute) => attribute.type === NLMSGERR_ATTR_MSG);
    if (text) message = decodeString(text.value);
  }
  return { errno, message };
}

export function isError(header: NetlinkHeader): boolean {
  return header.type === NLMSG_ERROR;
}

function decodeString(value: Buffer): string {
  const end = value.indexOf(0);
  return value.toString('utf8', 0, end < 0 ? value.length : end);
}

const HEX_OCTETS = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/** Formats a hardware address; runs for every link notification, so it avoids per-byte strings. */
function decodeMac(value: Buffer): string {
  let text = value.length > 0 ? HEX_OCTETS[value[0]!]! : '';
  for (let index = 1; index < value.length; index++) text += `:${HEX_OCTETS[value[index]!]!}`;
  return text;
}

/** One network interface as the kernel reports it in RTM_NEWLINK. */
export interface Link {
  /** ifi_family: AF_UNSPEC (0) for the device itself, AF_BRIDGE (7) for its bridge port. */
  family: number;
  index: number;
  name: string;
  flags: number;
  type: number;
  mtu?: number;
  minMtu?: number;
  maxMtu?: number;
  address?: string;
  master?: number;
  operstate?: string;
  kind?: string;
  slaveKind?: string;
  alias?: string;
  txQueues?: number;
  /** Present for tun and tap devices. */
  tun?: TunInfo;
  infoData?: Buffer;
}

/** Decodes the payload of an RTM_NEWLINK or RTM_DELLINK message. */
export function decodeLink(payload: Buffer): Link {
  const link: Link = {
    family: payload.readUInt8(0),
    type: payload.readUInt16LE(2),
    index: payload.readInt32LE(4),
    flags: payload.readUInt32LE(8),
    name: '',
  };
  for (const { type, value } of decodeAttributes(payload.subarray(IFINFOMSG_LEN))) {
    switch (type) {
      case IFLA.IFNAME: link.name = decodeString(value); break;
      case IFLA.MTU: link.mtu = value.readUInt32LE(0); break;
      case IFLA.MIN_MTU: link.minMtu = value.readUInt32LE(0); break;
      case IFLA.MAX_MTU: link.maxMtu = value.readUInt32LE(0); break;
      case IFLA.ADDRESS: link.address = decodeMac(value); break;
      case IFLA.MASTER: link.master = value.readUInt32LE(0); break;
      case IFLA.OPERSTATE: link.operstate = OPERSTATES[value.readUInt8(0)] ?? 'UNKNOWN'; break;
      case IFLA.IFALIAS: link.alias = decodeString(value); break;
      case IFLA.NUM_TX_QUEUES: link.txQueues = value.readUInt32LE(0); break;
      case IFLA.LINKINFO:
        for (const info of decodeAttributes(value)) {
          if (info.type === IFLA_INFO.KIND) link.kind = decodeString(info.value);
          if (info.type === IFLA_INFO.SLAVE_KIND) link.slaveKind = decodeString(info.value);
          if (info.type === IFLA_INFO.DATA) link.infoData = info.value;
        }
        break;
    }
  }
  if (link.kind === 'tun' && link.infoData) link.tun = decodeTunInfo(link.infoData);
  delete link.infoData;
  return link;
}

/** Tap state the tun driver reports in IFLA_INFO_DATA. */
export interface TunInfo {
  /** uid set with TUNSETOWNER; absent when none is set. */
  owner?: number;
  group?: number;
  persist: boolean;
  queues?: number;
  disabledQueues?: number;
}

function decodeTunInfo(data: Buffer): TunInfo {
  const info: TunInfo = { persist: false };
  for (const { type, value } of decodeAttributes(data)) {
    // Attributes shorter than their type are skipped, as the kernel's own parsers do.
    if (value.length >= 4 && type === IFLA_TUN.OWNER) info.owner = value.readUInt32LE(0);
    if (value.length >= 4 && type === IFLA_TUN.GROUP) info.group = value.readUInt32LE(0);
    if (value.length >= 1 && type === IFLA_TUN.PERSIST) info.persist = value.readUInt8(0) !== 0;
    if (value.length >= 4 && type === IFLA_TUN.NUM_QUEUES) info.queues = value.readUInt32LE(0);
    if (value.length >= 4 && type === IFLA_TUN.NUM_DISABLED_QUEUES) info.disabledQueues = value.readUInt32LE(0);
  }
  return info;
}

/** Encodes a MAC address written as six colon-separated hex octets. */
export function encodeMac(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((octet) => parseInt(octet, 16)));
}

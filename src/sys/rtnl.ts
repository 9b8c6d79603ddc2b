// An rtnetlink socket for link queries and changes, and a subscription to link events.
//
// Requests are synchronous: send, then read until the acknowledgement or NLMSG_DONE with the
// same sequence number. Changing links needs CAP_NET_ADMIN; reading them does not.

import { lastErrno, libc } from './libc.js';
import { closeFd, fail } from './fd.js';
import { SystemError } from './errors.js';
import {
  AF_NETLINK, IFF_UP, IFLA, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_ROUTE, NLMSG_DONE, NLM_F_ACK,
  NLM_F_DUMP, NLM_F_REQUEST, RTEXT_FILTER_SKIP_STATS, RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK,
  RTMGRP_LINK, SOCK_CLOEXEC, SOCK_RAW, SOL_NETLINK, SO_RCVBUF, SO_RCVTIMEO,
} from './constants.js';
import {
  cString, decodeError, decodeLink, encodeAttribute, encodeLinkMessage, encodeMac, isError, splitMessages,
  u32, type Link,
} from './rtnl-codec.js';

export type { Link } from './rtnl-codec.js';
export { AF_UNSPEC } from './constants.js';

const RECEIVE_BUFFER = 64 * 1024;
/** How long one read of link events blocks before it returns EAGAIN; must be under 1000. */
export const LINK_EVENT_READ_TIMEOUT_MS = 500;

function setIntOption(fd: number, level: number, option: number, value: number, name: string): void {
  const buffer = u32(value);
  // Safety: the option value is one int.
  if (libc.setsockopt(fd, level, option, buffer, 4) < 0) fail(`setsockopt(${name})`, 'rtnetlink socket');
}

function openNetlink(groups: number): number {
  const fd = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) fail('socket(AF_NETLINK)', 'rtnetlink');
  try {
    setIntOption(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1, 'NETLINK_EXT_ACK');
    setIntOption(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1, 'NETLINK_CAP_ACK');
    const address = Buffer.alloc(12);
    address.writeUInt16LE(AF_NETLINK, 0);
    address.writeUInt32LE(groups, 8);
    // Safety: struct sockaddr_nl is family, pad, pid and groups: 12 bytes.
    if (libc.bind(fd, address, address.length) < 0) fail('bind', 'rtnetlink socket');
    return fd;
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

export interface LinkChange {
  mtu?: number;
  address?: string;
  alias?: string;
  master?: number;
  up?: boolean;
}

/** A request socket on NETLINK_ROUTE in the caller's network namespace. */
export class RtnlSocket {
  private readonly fd: number;
  private seq = 1;
  private readonly buffer = Buffer.alloc(RECEIVE_BUFFER);

  constructor() {
    this.fd = openNetlink(0);
  }

  close(): void {
    closeFd(this.fd);
  }

  /** Returns one link by name, or undefined when no interface has that name. */
  getLinkByName(name: string): Link | undefined {
    return this.getLink(0, name);
  }

  /** Returns one link by ifindex, or undefined when it no longer exists. */
  getLinkByIndex(index: number): Link | undefined {
    return this.getLink(index, undefined);
  }

  private getLink(index: number, name: string | undefined): Link | undefined {
    const attributes = [encodeAttribute(IFLA.EXT_MASK, u32(RTEXT_FILTER_SKIP_STATS))];
    if (name !== undefined) attributes.push(encodeAttribute(IFLA.IFNAME, cString(name)));
    const object = name ?? `ifindex ${index}`;
    try {
      const replies = this.transact(RTM_GETLINK, NLM_F_REQUEST, index, 0, 0, attributes, object);
      return replies.length > 0 ? decodeLink(replies[0]) : undefined;
    } catch (error) {
      if (error instanceof SystemError && error.code === 'ENODEV') return undefined;
      throw error;
    }
  }

  /** Returns every link in the namespace. */
  listLinks(): Link[] {
    const attributes = [encodeAttribute(IFLA.EXT_MASK, u32(RTEXT_FILTER_SKIP_STATS))];
    return this.transact(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 0, 0, 0, attributes, 'all links').map(decodeLink);
  }

  /** Applies the given changes to one link in a single RTM_NEWLINK request. */
  setLink(index: number, change: LinkChange, object: string): void {
    const attributes: Buffer[] = [];
    if (change.mtu !== undefined) attributes.push(encodeAttribute(IFLA.MTU, u32(change.mtu)));
    if (change.address !== undefined) attributes.push(encodeAttribute(IFLA.ADDRESS, encodeMac(change.address)));
    if (change.alias !== undefined) attributes.push(encodeAttribute(IFLA.IFALIAS, Buffer.from(change.alias, 'utf8')));
    if (change.master !== undefined) attributes.push(encodeAttribute(IFLA.MASTER, u32(change.master)));
    const flags = change.up === true ? IFF_UP : 0;
    const mask = change.up === undefined ? 0 : IFF_UP;
    this.transact(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, index, flags, mask, attributes, object);
  }

  /** Deletes a link by ifindex. */
  deleteLink(index: number, object: string): void {
    this.transact(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, index, 0, 0, [], object);
  }

  private transact(type: number, flags: number, index: number, ifFlags: number, change: number, attributes: Buffer[], object: string): Buffer[] {
    const seq = this.seq++;
    const request = encodeLinkMessage(type, flags, seq, { family: 0, type: 0, index, flags: ifFlags, change }, attributes);
    const operation = rtmName(type);
    // Safety: send reads request.length bytes from the Buffer.
    if (Number(libc.send(this.fd, request, request.length, 0)) < 0) fail(operation, object);

    const payloads: Buffer[] = [];
    for (;;) {
      // Safety: recv writes at most buffer.length bytes.
      const received = Number(libc.recv(this.fd, this.buffer, this.buffer.length, 0));
      if (received < 0) throw new SystemError(`${operation} (reply)`, object, lastErrno());
      for (const { header, payload } of splitMessages(this.buffer.subarray(0, received))) {
        if (header.seq !== seq) continue;
        if (header.type === NLMSG_DONE) return payloads;
        if (isError(header)) {
          const error = decodeError(header, payload);
          if (error.errno !== 0) throw new SystemError(operation, object, error.errno, error.message);
          return payloads;
        }
        payloads.push(Buffer.from(payload));
        if (!(flags & NLM_F_DUMP) && !(flags & NLM_F_ACK)) return payloads;
      }
    }
  }
}

function rtmName(type: number): string {
  if (type === RTM_GETLINK) return 'RTM_GETLINK';
  if (type === RTM_NEWLINK) return 'RTM_NEWLINK';
  if (type === RTM_DELLINK) return 'RTM_DELLINK';
  return `rtnetlink message ${type}`;
}

export interface LinkEvent {
  kind: 'new' | 'del';
  link: Link;
}

/**
 * Opens a socket subscribed to link notifications (RTMGRP_LINK) and returns its fd, which the
 * caller reads with `decodeLinkEvents`. The receive buffer is enlarged so that bursts of tap
 * removals are not lost; a lost burst surfaces as ENOBUFS on read.
 */
export function openLinkEvents(): number {
  const fd = openNetlink(RTMGRP_LINK);
  setIntOption(fd, 1 /* SOL_SOCKET */, SO_RCVBUF, 4 * 1024 * 1024, 'SO_RCVBUF');
  // A blocking read that never returns would pin its thread-pool thread and keep the process
  // from exiting. With this timeout, a read without events fails with EAGAIN instead.
  const timeout = Buffer.alloc(16);
  timeout.writeBigInt64LE(BigInt(LINK_EVENT_READ_TIMEOUT_MS * 1000), 8);
  // Safety: struct timeval is two 64-bit fields (seconds, microseconds) on LP64.
  if (libc.setsockopt(fd, 1 /* SOL_SOCKET */, SO_RCVTIMEO, timeout, timeout.length) < 0) fail('setsockopt(SO_RCVTIMEO)', 'rtnetlink event socket');
  return fd;
}

/** Decodes the link notifications in one datagram read from an `openLinkEvents` socket. */
export function decodeLinkEvents(datagram: Buffer): LinkEvent[] {
  const events: LinkEvent[] = [];
  for (const { header, payload } of splitMessages(datagram)) {
    if (header.type === RTM_NEWLINK) events.push({ kind: 'new', link: decodeLink(payload) });
    if (header.type === RTM_DELLINK) events.push({ kind: 'del', link: decodeLink(payload) });
  }
  return events;
}


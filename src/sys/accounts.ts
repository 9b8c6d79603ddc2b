// User and group look-ups through glibc's NSS (getpwuid_r and friends), so that users from
// LDAP or systemd-userdb resolve the same way as in the rest of the system.

import { addressOf, libc } from './libc.js';
import { SystemError } from './errors.js';

export interface UserEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const STRING_AREA = 16 * 1024;
const PASSWD_SIZE = 48;
const GROUP_SIZE = 32;

/** Reads a C string that glibc stored inside `area`, given its absolute address. */
function stringAt(area: Buffer, base: bigint, pointer: bigint): string {
  if (pointer === 0n) return '';
  const offset = Number(pointer - base);
  if (offset < 0 || offset >= area.length) return '';
  const end = area.indexOf(0, offset);
  return area.toString('utf8', offset, end < 0 ? area.length : end);
}

type Lookup = (entry: Buffer, area: Buffer, areaSize: number, result: unknown[]) => number;

function lookup(call: Lookup, size: number, what: string): { entry: Buffer; area: Buffer } | undefined {
  for (let areaSize = STRING_AREA; areaSize <= 1024 * 1024; areaSize *= 4) {
    const entry = Buffer.alloc(size);
    const area = Buffer.alloc(areaSize);
    const result: unknown[] = [null];
    const status = call(entry, area, areaSize, result);
    if (status === 34 /* ERANGE */) continue;
    if (status !== 0) throw new SystemError('NSS look-up', what, status);
    return result[0] ? { entry, area } : undefined;
  }
  throw new SystemError('NSS look-up', what, 34);
}

function decodeUser(entry: Buffer, area: Buffer): UserEntry {
  const base = addressOf(area);
  return {
    name: stringAt(area, base, entry.readBigUInt64LE(0)),
    uid: entry.readUInt32LE(16),
    gid: entry.readUInt32LE(20),
    home: stringAt(area, base, entry.readBigUInt64LE(32)),
  };
}

function decodeGroup(entry: Buffer, area: Buffer): GroupEntry {
  const base = addressOf(area);
  const members: string[] = [];
  const list = entry.readBigUInt64LE(24);
  if (list !== 0n) {
    for (let offset = Number(list - base); offset >= 0 && offset + 8 <= area.length; offset += 8) {
      const pointer = area.readBigUInt64LE(offset);
      if (pointer === 0n) break;
      members.push(stringAt(area, base, pointer));
    }
  }
  return { name: stringAt(area, base, entry.readBigUInt64LE(0)), gid: entry.readUInt32LE(16), members };
}

// Safety for the four look-ups below: glibc writes the struct into `entry` (sized for LP64)
// and every string it points to into `area`, never beyond `areaSize` bytes.

/** Returns the user with this uid, or undefined when NSS has no entry. */
export function userById(uid: number): UserEntry | undefined {
  const found = lookup((entry, area, size, result) => libc.getpwuid_r(uid, entry, area, size, result), PASSWD_SIZE, `uid ${uid}`);
  return found && decodeUser(found.entry, found.area);
}

/** Returns the user with this name, or undefined when NSS has no entry. */
export function userByName(name: string): UserEntry | undefined {
  const found = lookup((entry, area, size, result) => libc.getpwnam_r(name, entry, area, size, result), PASSWD_SIZE, `user ${name}`);
  return found && decodeUser(found.entry, found.area);
}

/** Returns the group with this name, or undefined when NSS has no entry. */
export function groupByName(name: string): GroupEntry | undefined {
  const found = lookup((entry, area, size, result) => libc.getgrnam_r(name, entry, area, size, result), GROUP_SIZE, `group ${name}`);
  return found && decodeGroup(found.entry, found.area);
}

/** Returns the group with this gid, or undefined when NSS has no entry. */
export function groupById(gid: number): GroupEntry | undefined {
  const found = lookup((entry, area, size, result) => libc.getgrgid_r(gid, entry, area, size, result), GROUP_SIZE, `gid ${gid}`);
  return found && decodeGroup(found.entry, found.area);
}

/**
 * Returns the gids `user` gets at login (getgrouplist): `gid` plus every group that lists the
 * user as a member. A process started before a group change may hold other groups.
 */
export function loginGroups(user: string, gid: number): number[] {
  let capacity = 64;
  for (;;) {
    const groups = Buffer.alloc(capacity * 4);
    const count = [capacity];
    // Safety: glibc writes at most `count` gid_t values and sets `count` to the number it found.
    const status = libc.getgrouplist(user, gid, groups, count);
    if (status >= 0) return Array.from({ length: count[0] }, (_, index) => groups.readUInt32LE(index * 4));
    if (capacity >= 65536) throw new SystemError('getgrouplist', `user ${user}`, 34 /* ERANGE */);
    capacity = Math.max(capacity * 2, count[0]);
  }
}

/**
 * Returns look-ups that tell whether a user or group name exists. A failed look-up (an
 * unreachable LDAP server, say) counts as existing, because it proves nothing about the name.
 */
export function nssNameLookups(): { userExists(name: string): boolean; groupExists(name: string): boolean } {
  const exists = (find: (name: string) => unknown) => (name: string): boolean => {
    try {
      return find(name) !== undefined;
    } catch (error) {
      if (error instanceof SystemError) return true;
      throw error;
    }
  };
  return { userExists: exists(userByName), groupExists: exists(groupByName) };
}

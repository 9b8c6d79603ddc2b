// The requester's identity, taken from the kernel's record of the connection and never from
// the request itself. Names are resolved through NSS and cached briefly.

import { peerCredentials, peerGroups } from '../sys/unix.js';
import { groupById, userById } from '../sys/accounts.js';
import type { Identity } from '../policy/types.js';

const CACHE_MS = 5000;

interface Cached<T> {
  value: T;
  at: number;
}

const userNames = new Map<number, Cached<string | undefined>>();
const groupNames = new Map<number, Cached<string | undefined>>();

function cached<T>(cache: Map<number, Cached<T>>, key: number, resolve: (key: number) => T): T {
  const now = Date.now();
  const hit = cache.get(key);
  if (hit && now - hit.at < CACHE_MS) return hit.value;
  const value = resolve(key);
  if (cache.size > 4096) cache.clear();
  cache.set(key, { value, at: now });
  return value;
}

/** Returns the user name for a uid, or undefined when NSS has no entry for it. */
export function userName(uid: number): string | undefined {
  return cached(userNames, uid, (id) => userById(id)?.name);
}

function groupName(gid: number): string | undefined {
  return cached(groupNames, gid, (id) => groupById(id)?.name);
}

/** Reads the identity of the process connected on socket `fd` (SO_PEERCRED, SO_PEERGROUPS). */
export function connectionIdentity(fd: number): Identity {
  const credentials = peerCredentials(fd);
  const groups = peerGroups(fd);
  const names = [credentials.gid, ...groups].map(groupName).filter((name): name is string => name !== undefined);
  return {
    uid: credentials.uid,
    gid: credentials.gid,
    groups,
    pid: credentials.pid,
    user: userName(credentials.uid),
    groupNames: [...new Set(names)],
  };
}

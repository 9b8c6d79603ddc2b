// Warnings about a valid policy that depend on the system it runs on: rule names missing from the
// user database, and networks whose bridge is missing. The caller supplies the look-ups
// (NSS, rtnetlink), so this file stays free of I/O. A warning never makes a policy invalid,
// because a user, group or bridge may be created after the policy is loaded.

import type { Policy } from './types.js';

/** Look-ups into the user database; each returns whether the name exists. */
export interface NameLookups {
  userExists(name: string): boolean;
  groupExists(name: string): boolean;
}

/** A look-up of an interface by name: undefined when none exists, else its kind (`bridge`, `veth`, undefined for a plain device). */
export type BridgeLookup = (name: string) => { kind?: string | undefined } | undefined;

const NUMERIC_ID = /^\d+$/;

/**
 * Lists, as `FILE:LINE: message`, every user and group name in the policy's rules that
 * `lookups` does not find. `"*"` and numeric ids are not checked, because a uid or gid needs no
 * entry in the user database to match.
 */
export function nameWarnings(policy: Policy, lookups: NameLookups): string[] {
  const warnings: string[] = [];
  for (const rule of policy.rules) {
    const effect = rule.kind === 'allow' ? 'matches nobody by that name' : 'denies nobody by that name';
    for (const user of rule.users) {
      if (user === '*' || NUMERIC_ID.test(user) || lookups.userExists(user)) continue;
      warnings.push(`${rule.source}: user "${user}" is not in the user database (NSS), so this ${rule.kind} rule ${effect}; check the spelling or create the user`);
    }
    for (const group of rule.groups) {
      if (group === '*' || NUMERIC_ID.test(group) || lookups.groupExists(group)) continue;
      warnings.push(`${rule.source}: group "${group}" is not in the group database (NSS), so this ${rule.kind} rule ${effect}; check the spelling or create the group`);
    }
  }
  return warnings;
}

/**
 * Lists, as `FILE:LINE: message`, every network whose bridge `lookup` does not find or finds to
 * be another kind of device. Requests for such a network fail until the bridge is fixed.
 */
export function bridgeWarnings(policy: Policy, lookup: BridgeLookup): string[] {
  const warnings: string[] = [];
  for (const network of policy.networks.values()) {
    const link = lookup(network.bridge);
    if (!link) {
      warnings.push(`${network.source}: bridge ${network.bridge} of network "${network.name}" does not exist; requests for "${network.name}" fail until it is created (ip link add ${network.bridge} type bridge && ip link set ${network.bridge} up)`);
    } else if (link.kind !== 'bridge') {
      const kind = link.kind ? `a ${link.kind} device` : 'a plain device';
      warnings.push(`${network.source}: interface ${network.bridge} of network "${network.name}" is ${kind}, not a bridge; requests for "${network.name}" fail until bridge = names a bridge`);
    }
  }
  return warnings;
}

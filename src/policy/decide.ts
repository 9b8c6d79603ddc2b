// The decision function: identity and requested network in, decision and deciding rule out.
// It performs no I/O, so every case is testable without privileges.

import { describeRule, type Identity, type Limits, type Network, type Policy, type Rule } from './types.js';

export type DecisionCode = 'allowed' | 'denied' | 'unknown-network';

export interface Decision {
  allowed: boolean;
  code: DecisionCode;
  /** The network the request resolved to, when it names one. */
  network: Network | undefined;
  /** The rule that decided; undefined for the default deny and unknown networks. */
  rule: Rule | undefined;
  /** Limits of the deciding allow rule. */
  limits: Limits | undefined;
  /** A sentence for the requester and the audit log. */
  reason: string;
}

/** Finds a network by its own name, or else by its bridge's name. */
export function findNetwork(policy: Policy, name: string): Network | undefined {
  const byName = policy.networks.get(name);
  if (byName) return byName;
  for (const network of policy.networks.values()) {
    if (network.bridge === name) return network;
  }
  return undefined;
}

function matchesIdentity(rule: Rule, identity: Identity): boolean {
  const uid = String(identity.uid);
  if (rule.users.some((user) => user === '*' || user === uid || user === identity.user)) return true;
  const gids = new Set([identity.gid, ...identity.groups].map(String));
  return rule.groups.some((group) => group === '*' || gids.has(group) || identity.groupNames.includes(group));
}

function matchesNetwork(rule: Rule, network: Network): boolean {
  return rule.networks.includes('*') || rule.networks.includes(network.name);
}

/** Describes the requester as `user alice (uid 1000)`. */
export function describeIdentity(identity: Identity): string {
  return identity.user ? `user ${identity.user} (uid ${identity.uid})` : `uid ${identity.uid}`;
}

/**
 * Decides whether `identity` may use the network named `requested` (a network or bridge name).
 * A matching deny rule wins over every allow rule, whatever their order in the file; among
 * allow rules the first in file order supplies the limits; no matching rule means deny.
 */
export function decide(policy: Policy, identity: Identity, requested: string): Decision {
  const network = findNetwork(policy, requested);
  const who = describeIdentity(identity);
  if (!network) {
    const known = [...policy.networks.values()].map((n) => `${n.name} (bridge ${n.bridge})`).join(', ') || 'none';
    return {
      allowed: false, code: 'unknown-network', network: undefined, rule: undefined, limits: undefined,
      reason: `"${requested}" is neither a network nor a network's bridge in ${policy.path}; defined networks: ${known}`,
    };
  }

  const applicable = policy.rules.filter((rule) => matchesNetwork(rule, network) && matchesIdentity(rule, identity));
  const deny = applicable.find((rule) => rule.kind === 'deny');
  if (deny) {
    return {
      allowed: false, code: 'denied', network, rule: deny, limits: undefined,
      reason: `network "${network.name}" (bridge ${network.bridge}) is denied to ${who} by the ${describeRule(deny)}`,
    };
  }
  const allow = applicable.find((rule) => rule.kind === 'allow');
  if (allow) {
    return {
      allowed: true, code: 'allowed', network, rule: allow, limits: allow.limits,
      reason: `network "${network.name}" (bridge ${network.bridge}) is allowed to ${who} by the ${describeRule(allow)}`,
    };
  }
  const subject = identity.user ? `users = ["${identity.user}"]` : `users = ["${identity.uid}"]`;
  return {
    allowed: false, code: 'denied', network, rule: undefined, limits: undefined,
    reason: `network "${network.name}" (bridge ${network.bridge}) is denied to ${who}: no allow rule in ${policy.path} matches; ` +
      `an administrator can add an [[allow]] rule with ${subject} (or one of the user's groups) and networks = ["${network.name}"]`,
  };
}

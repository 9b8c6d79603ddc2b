// The `check` operation: explains the decision that an open-tap request would get, with the
// deciding rule, its limits and the current usage, for the requester or (root only) any user.

import { groupById, loginGroups, userById, userByName } from '../sys/accounts.js';
import { describeIdentity } from '../policy/decide.js';
import { describeRule, type Identity } from '../policy/types.js';
import { PROTOCOL_VERSION, RequestError, type CheckRequest, type Reply } from '../protocol/messages.js';
import { GrantRefusal, checkBridge, decideForRequester, type GrantContext } from './grant.js';

/**
 * Builds the identity `user` (a name or decimal uid) would have after logging in: primary
 * group and the supplementary groups from the group database. A running process of that user
 * may hold other groups (it started before a change, or dropped some), and its requests are
 * decided on the groups the kernel reports for it.
 */
function loginIdentity(user: string): Identity {
  const entry = /^\d+$/.test(user) ? userById(Number(user)) : userByName(user);
  if (!entry) throw new RequestError(`User ${JSON.stringify(user)} not found in the user database; give an existing user name or uid`);
  const groups = loginGroups(entry.name, entry.gid);
  const groupNames = groups.map((gid) => groupById(gid)?.name).filter((name): name is string => name !== undefined);
  return { uid: entry.uid, gid: entry.gid, groups, user: entry.name, groupNames: [...new Set(groupNames)], pid: 0 };
}

function subjectOf(requester: Identity, user: string | undefined): Identity {
  if (user === undefined) return requester;
  if (requester.uid !== 0) {
    throw new RequestError(`Only root may check another user's access (user ${JSON.stringify(user)}); run "tapgate check --network NAME" without --user to check your own`, 'denied');
  }
  return loginIdentity(user);
}

/** Returns the `check` reply: the policy decision, the quota and the bridge's state. */
export function explainAccess(context: GrantContext, requester: Identity, request: CheckRequest): Reply {
  const subject = subjectOf(requester, request.user);
  const decision = decideForRequester(context, subject, request.network);
  const network = decision.network;

  let inUse = 0;
  let bridgeProblem: string | null = null;
  if (network) {
    // Usage is read from the kernel, so a tap that vanished a moment ago no longer counts.
    context.refreshLeases(subject.uid, network.name);
    inUse = context.leases.count(subject.uid, network.name);
    try {
      checkBridge(context.rtnl.getLinkByName(network.bridge), network);
    } catch (error) {
      if (!(error instanceof GrantRefusal)) throw error;
      bridgeProblem = error.message;
    }
  }
  const quotaFull = decision.limits !== undefined && inUse >= decision.limits.maxTaps;
  return {
    version: PROTOCOL_VERSION, ok: true, op: 'check',
    user: { uid: subject.uid, name: subject.user ?? null, description: describeIdentity(subject) },
    network: network ? { name: network.name, bridge: network.bridge } : null,
    allowed: decision.allowed,
    reason: decision.reason,
    rule: decision.rule ? describeRule(decision.rule) : null,
    source: decision.rule?.source ?? null,
    limits: decision.limits ?? null,
    inUse,
    quotaFull,
    bridgeProblem,
    wouldGrant: decision.allowed && !quotaFull && bridgeProblem === null,
  };
}

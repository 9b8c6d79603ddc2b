// Decisions for a policy with a [bridge_conf] table: tapgate's TOML rules and a QEMU bridge.conf
// combined. bridge.conf is read again for every request, through a reader the daemon supplies,
// so an edited file applies to the next VM without a reload.
//
// How the two combine:
// - A requested name that is a [networks] network or its bridge resolves to that network. Any
//   other name is taken as a bridge name and used as a network of the same name, which only
//   bridge.conf can grant: `networks = ["*"]` in an [[allow]] covers [networks] tables only.
// - bridge.conf rules are matched against the bridge the tap would join, not the network name.
// - A matching TOML [[deny]] wins first (its `networks = ["*"]` also covers bridges reached
//   through bridge.conf), then a bridge.conf `deny all` or `deny BRIDGE`.
// - Otherwise a TOML [[allow]] grants with its own limits, else a bridge.conf allow grants with
//   the limits of [bridge_conf]; with neither, the request is denied.

import { decide, describeIdentity, findNetwork, type Decision } from './decide.js';
import { BridgeConfError, evaluateBridgeConf, loadBridgeConf, type BridgeConfRule, type LoadedBridgeConf, type PolicyFileReader } from './bridge-conf.js';
import type { Identity, Limits, Network, Policy, Rule } from './types.js';

/** Presents a bridge.conf rule as a tapgate rule, so grants and the audit log can name it. */
function asRule(rule: BridgeConfRule, network: Network, limits: Limits): Rule {
  return { kind: rule.kind, label: `${rule.kind} ${rule.bridge}`, source: rule.source, users: ['*'], groups: [], networks: [network.name], limits };
}

function withNetwork(policy: Policy, network: Network): Policy {
  return { ...policy, networks: new Map([...policy.networks, [network.name, network]]) };
}

function describeTarget(network: Network): string {
  return network.name === network.bridge ? `bridge ${network.bridge}` : `bridge ${network.bridge} (network "${network.name}")`;
}

/**
 * Decides whether `identity` may use `requested` (a network or bridge name). Without a
 * [bridge_conf] table this is `decide`. With one, the main bridge.conf and its includes are read
 * through `read`, which must apply the requester's file permissions. Every reason names the
 * files read and any include skipped because it does not exist.
 * @throws BridgeConfError when bridge.conf cannot be read or has an error, with a message that
 *   names the file (and line), the bridge and the requester.
 */
export function decideRequest(policy: Policy, identity: Identity, requested: string, read: PolicyFileReader): Decision {
  const source = policy.bridgeConf;
  if (!source) return decide(policy, identity, requested);
  const requester = describeIdentity(identity);
  const known = findNetwork(policy, requested);
  const network: Network = known ?? { name: requested, bridge: requested, source: source.path };

  let conf: LoadedBridgeConf;
  try {
    conf = loadBridgeConf(source.path, read);
  } catch (error) {
    if (!(error instanceof BridgeConfError)) throw error;
    throw new BridgeConfError(error.problems, `; ${describeTarget(network)} is denied to ${requester} until this is fixed (bridge.conf is set in [bridge_conf] at ${source.source})`);
  }
  const verdict = evaluateBridgeConf(conf, network.bridge);
  const toml = decide(known ? policy : withNetwork(policy, network), identity, network.name);
  const warnings = conf.warnings.length > 0 ? `; warnings: ${conf.warnings.join('; ')}` : '';
  const notes = `policy files read: ${[policy.path, ...conf.files].join(', ')}${warnings}`;
  const target = describeTarget(network);

  if (toml.rule?.kind === 'deny') return { ...toml, reason: `${toml.reason}; ${notes}` };
  if (verdict.rule?.kind === 'deny') {
    return {
      allowed: false, code: 'denied', network, rule: asRule(verdict.rule, network, source.limits), limits: undefined,
      reason: `${target} is denied to ${requester} by "deny ${verdict.rule.bridge}" at ${verdict.rule.source}; ${notes}`,
    };
  }
  if (known && toml.allowed) return { ...toml, reason: `${toml.reason}; ${notes}` };
  if (verdict.allowed && verdict.rule) {
    const granted = known ?? { ...network, source: verdict.rule.source };
    return {
      allowed: true, code: 'allowed', network: granted, rule: asRule(verdict.rule, granted, source.limits), limits: source.limits,
      reason: `${target} is allowed to ${requester} by "allow ${verdict.rule.bridge}" at ${verdict.rule.source}; ${notes}`,
    };
  }
  const tomlHint = known ? `no [[allow]] rule in ${policy.path} matches` : `it is not a network in ${policy.path}`;
  return {
    allowed: false, code: 'denied', network, rule: undefined, limits: undefined,
    reason: `${target} is denied to ${requester}: no rule allows it; the bridge.conf files this user can read have no ` +
      `"allow ${network.bridge}" or "allow all", and ${tomlHint}; ${notes}`,
  };
}

// The lease table: which tap belongs to whom, rebuilt from the kernel at start-up.
//
// Each tap carries its owner in its interface alias (IFLA_IFALIAS), so the table can always be
// recovered from the kernel: `tapgate uid=1000 network=lab lease=0a1b2c3d mac=52:54:00:12:34:56`.

export interface Lease {
  id: string;
  tap: string;
  ifindex: number;
  uid: number;
  network: string;
  bridge: string;
  mac: string;
  /** Queues granted; absent for taps adopted from an alias written before queues were recorded. */
  queues?: number;
  pid: number | null;
  since: string;
  /**
   * Whether a notification has shown the tap with TAP_HOST_MAC. Until then, notifications
   * that show another MAC are those sent before the grant configured it.
   */
  hostMacSeen: boolean;
}

const ALIAS_PREFIX = 'tapgate ';

export function encodeAlias(lease: Pick<Lease, 'uid' | 'network' | 'id' | 'mac' | 'queues'>): string {
  return `${ALIAS_PREFIX}uid=${lease.uid} network=${lease.network} lease=${lease.id} mac=${lease.mac}${lease.queues ? ` queues=${lease.queues}` : ''}`;
}

/** Parses an alias written by `encodeAlias`; returns undefined for any other alias. */
export function decodeAlias(alias: string | undefined): Pick<Lease, 'uid' | 'network' | 'id' | 'mac' | 'queues'> | undefined {
  if (!alias?.startsWith(ALIAS_PREFIX)) return undefined;
  const fields = new Map(alias.slice(ALIAS_PREFIX.length).split(' ').map((pair) => pair.split('=', 2) as [string, string]));
  const uid = Number(fields.get('uid'));
  const network = fields.get('network');
  const id = fields.get('lease');
  const mac = fields.get('mac');
  if (!Number.isInteger(uid) || uid < 0 || !network || !id || !mac) return undefined;
  const queues = Number(fields.get('queues'));
  return Number.isInteger(queues) && queues > 0 ? { uid, network, id, mac, queues } : { uid, network, id, mac };
}

function ownerKey(uid: number, network: string): string {
  return `${uid}\0${network}`;
}

export class LeaseTable {
  private readonly byIndex = new Map<number, Lease>();
  private readonly byOwner = new Map<string, Set<number>>();

  add(lease: Lease): void {
    this.byIndex.set(lease.ifindex, lease);
    const key = ownerKey(lease.uid, lease.network);
    let set = this.byOwner.get(key);
    if (!set) this.byOwner.set(key, (set = new Set()));
    set.add(lease.ifindex);
  }

  /** Removes and returns the lease of a tap that disappeared. */
  remove(ifindex: number): Lease | undefined {
    const lease = this.byIndex.get(ifindex);
    if (!lease) return undefined;
    this.byIndex.delete(ifindex);
    const key = ownerKey(lease.uid, lease.network);
    const set = this.byOwner.get(key);
    set?.delete(ifindex);
    if (set?.size === 0) this.byOwner.delete(key);
    return lease;
  }

  get(ifindex: number): Lease | undefined {
    return this.byIndex.get(ifindex);
  }

  /** Number of taps `uid` holds on `network`: the quantity quotas limit. */
  count(uid: number, network: string): number {
    return this.byOwner.get(ownerKey(uid, network))?.size ?? 0;
  }

  /** Leases of one user on one network. */
  owned(uid: number, network: string): Lease[] {
    return [...(this.byOwner.get(ownerKey(uid, network)) ?? [])].map((index) => this.byIndex.get(index)!);
  }

  all(): Lease[] {
    return [...this.byIndex.values()];
  }

  get size(): number {
    return this.byIndex.size;
  }
}

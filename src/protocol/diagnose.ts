// The reply to a `diagnose` request: facts the daemon gathers in its own namespaces for `tapgate doctor`.
//
// The daemon reports facts, not advice: the client decides what is wrong and which command fixes
// it, so the wording can change without a protocol change. Everything here is readable by the
// caller, so the daemon only includes bridge and firewall facts for networks the caller may use.

/** Result of the daemon's own attempt to open /dev/net/tun. */
export type TunFacts =
  | { ok: true; path: string }
  | {
    ok: false;
    path: string;
    /** errno name of the failed open or ioctl, such as ENOENT or EACCES. */
    code: string;
    message: string;
    /** Permission bits of the device node (st_mode & 0o7777), or null when there is no node. */
    mode: number | null;
    /** Whether the node is a character device; null when there is no node. */
    characterDevice: boolean | null;
    /** Whether the mode bits grant the daemon's uid or gids read and write access; null without a node. */
    modeAllowsDaemon: boolean | null;
    /** Device number of the node; null when there is no node. */
    device: { major: number; minor: number } | null;
    /** Whether /proc/misc lists the tun driver; null when /proc/misc cannot be read. */
    driverRegistered: boolean | null;
    /** The tun driver's misc minor from /proc/misc (200 in drivers/net/tun.c); null when not registered. */
    driverMinor: number | null;
    /** The mount that contains the path, from /proc/self/mountinfo; null when not found. */
    mount: { point: string; nodev: boolean } | null;
  };

/** State of one firewall tool that the daemon ran with fixed arguments. */
export interface ToolFacts {
  /** 'skipped' when the caller may use no network, or when the nft listing already covers iptables-nft's rules. */
  state: 'listed' | 'missing' | 'failed' | 'skipped';
  /** The reason a listing failed or was skipped. */
  detail?: string;
}

/** A FORWARD chain that drops, or may drop, IPv4 frames crossing one bridge when br_netfilter passes them to it. */
export interface ForwardBlock {
  tool: 'nft' | 'iptables';
  /** nft family (`ip`, `inet`); `ip` for iptables. */
  family: string;
  table: string;
  /** The base chain on the forward hook. */
  chain: string;
  /** 'policy' when the chain's policy drops; 'rule' when a rule drops. */
  by: 'policy' | 'rule';
  /** True when every bridged frame is dropped; false when only frames that match other conditions are. */
  certain: boolean;
  /** The dropping rule, as `iptables -S` prints it or as a short nft summary with its handle. */
  rule?: string;
}

/** include/linux/netdevice.h: addr_assign_type NET_ADDR_SET, an address set from user space. */
export const NET_ADDR_SET = 3;

export interface PortFacts {
  name: string;
  mtu: number;
  kind: string | null;
}

export type BridgeFacts =
  | { exists: false }
  | {
    exists: true;
    /** IFLA_INFO_KIND (`bridge`, `veth`...), or null for a device without one, such as a physical NIC. */
    kind: string | null;
    up: boolean;
    mtu: number;
    address: string | null;
    /** /sys/class/net/NAME/addr_assign_type (3 is NET_ADDR_SET); null when sysfs shows another namespace. */
    addressAssignType: number | null;
    /** The bridge's own nf_call_iptables option (0 or 1); null when unknown or not a bridge. */
    nfCallIptables: number | null;
    ports: PortFacts[];
  };

export type NetworkFacts =
  | { name: string; bridge: string; source: string; checked: false; reason: string }
  | { name: string; bridge: string; source: string; checked: true; link: BridgeFacts; forward: ForwardBlock[] };

/** A type alias, not an interface, so that it is assignable to the generic Reply of messages.ts. */
export type DiagnoseReply = {
  version: number;
  ok: true;
  op: 'diagnose';
  daemon: {
    pid: number;
    /** readlink of /proc/self/ns/net and /proc/self/ns/mnt, such as `net:[4026531840]`. */
    netns: string | null;
    mntns: string | null;
  };
  tun: TunFacts;
  brNetfilter: {
    /** Whether /proc/sys/net/bridge exists, which it does once br_netfilter is loaded. */
    loaded: boolean;
    /** net.bridge.bridge-nf-call-iptables in the daemon's network namespace; null when not loaded. */
    callIptables: number | null;
  };
  firewall: { nft: ToolFacts; iptables: ToolFacts };
  networks: NetworkFacts[];
};

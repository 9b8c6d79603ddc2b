// Kernel constants and structure layouts used by sys/, with the header each one comes from.
//
// Values are for Linux on x86_64 and aarch64 (LP64, little-endian); both share the
// asm-generic ioctl encoding used below.

/** include/uapi/asm-generic/fcntl.h */
export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const F_GETFL = 3;
export const F_SETFL = 4;

/** include/uapi/linux/if_tun.h: ioctl requests, encoded _IOW('T', n, int) / _IOR('T', n, unsigned int). */
export const TUNSETIFF = 0x400454ca;
export const TUNSETOWNER = 0x400454cc;
export const TUNGETFEATURES = 0x800454cf;
export const TUNGETIFF = 0x800454d2;

/** include/uapi/linux/if_tun.h: TUNSETIFF flags. */
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_VNET_HDR = 0x4000;
/** Makes TUNSETIFF fail with EBUSY instead of attaching to an existing device of that name. */
export const IFF_TUN_EXCL = 0x8000;

/** include/uapi/linux/if.h */
export const IFNAMSIZ = 16;
/** struct ifreq: char ifr_name[16] then a 24-byte union; ifr_flags is a short at offset 16. */
export const IFREQ_SIZE = 40;
export const IFREQ_FLAGS_OFFSET = 16;
export const IFF_UP = 0x1;

/** include/linux/socket.h, include/uapi/asm-generic/socket.h */
/** ifi_family of a device's own link notifications. */
export const AF_UNSPEC = 0;
export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_PEERCRED = 17;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
export const SO_PEERGROUPS = 59;
export const SCM_RIGHTS = 1;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CTRUNC = 0x8;

/** struct msghdr (56 bytes), struct iovec (16), struct cmsghdr (16, then data) on LP64. */
export const MSGHDR = { size: 56, iov: 16, iovlen: 24, control: 32, controllen: 40, flags: 48 } as const;
export const IOVEC_SIZE = 16;
export const CMSGHDR_SIZE = 16;
/** The kernel accepts at most SCM_MAX_FD (253) descriptors in one SCM_RIGHTS message. */
export const SCM_MAX_FD = 253;

/** include/uapi/linux/netlink.h */
export const NETLINK_ROUTE = 0;
export const SOL_NETLINK = 270;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_CAP_ACK = 10;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;
export const RTMGRP_LINK = 0x1;

/** include/uapi/linux/rtnetlink.h */
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;

/** include/uapi/linux/if_link.h: link attributes (IFLA_*). */
export const IFLA = {
  ADDRESS: 1,
  BROADCAST: 2,
  IFNAME: 3,
  MTU: 4,
  LINK: 5,
  MASTER: 10,
  TXQLEN: 13,
  OPERSTATE: 16,
  LINKINFO: 18,
  IFALIAS: 20,
  EXT_MASK: 29,
  PROMISCUITY: 30,
  NUM_TX_QUEUES: 31,
  CARRIER: 33,
  MIN_MTU: 50,
  MAX_MTU: 51,
} as const;

/** include/uapi/linux/if_link.h: attributes nested in IFLA_LINKINFO. */
export const IFLA_INFO = { KIND: 1, DATA: 2, SLAVE_KIND: 4 } as const;

/** include/uapi/linux/if_link.h: tun attributes nested in IFLA_INFO_DATA (Linux 4.15 and later). */
export const IFLA_TUN = { OWNER: 1, GROUP: 2, PERSIST: 6, NUM_QUEUES: 8, NUM_DISABLED_QUEUES: 9 } as const;

/** include/uapi/linux/if_link.h: enum values of IFLA_OPERSTATE, indexed by value. */
export const OPERSTATES = ['UNKNOWN', 'NOTPRESENT', 'DOWN', 'LOWERLAYERDOWN', 'TESTING', 'DORMANT', 'UP'] as const;

/** include/uapi/linux/if_arp.h */
export const ARPHRD_ETHER = 1;

// Tap devices through /dev/net/tun: creation, queue attachment and flag queries.
//
// Creating a tap (TUNSETIFF on a new name) needs CAP_NET_ADMIN in the network namespace's
// user namespace. The device lives in the network namespace of the process that opens
// /dev/net/tun and, since it is never made persistent, disappears when its last fd closes.

import { libc } from './libc.js';
import { closeAll, closeFd, fail } from './fd.js';
import { SystemError } from './errors.js';
import {
  IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN_EXCL, IFF_VNET_HDR, IFNAMSIZ, IFREQ_FLAGS_OFFSET,
  IFREQ_SIZE, O_CLOEXEC, O_RDWR, TUNGETFEATURES, TUNGETIFF, TUNSETIFF,
} from './constants.js';

export const TUN_PATH = '/dev/net/tun';

export interface TapRequest {
  /** Exact interface name, 1 to 15 bytes; no `%d` template. */
  name: string;
  /** Number of queues, one fd each; more than one makes a multi-queue tap. */
  queues: number;
  /** Whether frames carry a struct virtio_net_hdr (QEMU's vnet_hdr=on). */
  vnetHdr: boolean;
}

export interface Tap {
  name: string;
  /** The interface index, read once the device exists. */
  ifindex: number;
  flags: number;
  /** One open descriptor per queue, owned by the caller. */
  fds: number[];
}

function openTun(): number {
  // Safety: the path is a constant and the flags a plain int; the result is a new fd or -1.
  const fd = libc.open(TUN_PATH, O_RDWR | O_CLOEXEC);
  if (fd < 0) fail('open', TUN_PATH);
  return fd;
}

function encodeIfreq(name: string, flags: number): Buffer {
  const ifreq = Buffer.alloc(IFREQ_SIZE);
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length >= IFNAMSIZ) {
    throw new RangeError(`Interface name "${name}" must be 1 to ${IFNAMSIZ - 1} bytes`);
  }
  bytes.copy(ifreq, 0);
  ifreq.writeUInt16LE(flags, IFREQ_FLAGS_OFFSET);
  return ifreq;
}

function decodeIfreqName(ifreq: Buffer): string {
  const end = ifreq.indexOf(0);
  return ifreq.toString('utf8', 0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end);
}

/** Returns the IFF_* flags this kernel's tun driver supports (TUNGETFEATURES). */
export function tunFeatures(): number {
  const fd = openTun();
  try {
    const value = Buffer.alloc(4);
    // Safety: TUNGETFEATURES writes one unsigned int into the 4-byte buffer.
    if (libc.ioctlPtr(fd, TUNGETFEATURES, 'void *', value) < 0) fail('ioctl(TUNGETFEATURES)', TUN_PATH);
    return value.readUInt32LE(0);
  } finally {
    closeFd(fd);
  }
}

/** Returns the name and IFF_* flags of the tap attached to an fd (TUNGETIFF). */
export function tapInfo(fd: number): { name: string; flags: number } {
  const ifreq = Buffer.alloc(IFREQ_SIZE);
  // Safety: TUNGETIFF fills a struct ifreq, which is IFREQ_SIZE bytes.
  if (libc.ioctlPtr(fd, TUNGETIFF, 'void *', ifreq) < 0) fail('ioctl(TUNGETIFF)', `fd ${fd}`);
  return { name: decodeIfreqName(ifreq), flags: ifreq.readUInt16LE(IFREQ_FLAGS_OFFSET) };
}

/**
 * Creates a new tap and returns one fd per queue.
 *
 * IFF_TUN_EXCL makes the first TUNSETIFF fail with EBUSY when any interface already has the
 * name, so an existing device is never adopted. Requires CAP_NET_ADMIN.
 * @throws SystemError with code EBUSY on a name collision, or the errno of the failed step.
 */
export function createTap(request: TapRequest): Tap {
  let flags = IFF_TAP | IFF_NO_PI;
  if (request.vnetHdr) flags |= IFF_VNET_HDR;
  if (request.queues > 1) flags |= IFF_MULTI_QUEUE;

  const fds: number[] = [];
  try {
    for (let queue = 0; queue < request.queues; queue++) {
      const fd = openTun();
      fds.push(fd);
      const ifreq = encodeIfreq(request.name, queue === 0 ? flags | IFF_TUN_EXCL : flags);
      // Safety: TUNSETIFF reads and rewrites the IFREQ_SIZE-byte struct ifreq.
      if (libc.ioctlPtr(fd, TUNSETIFF, 'void *', ifreq) < 0) fail('ioctl(TUNSETIFF)', `tap ${request.name}`);
    }
    // No TUNSETOWNER: without an owner, attaching another queue by name needs CAP_NET_ADMIN.
    // QEMU's TUNSETQUEUE on descriptors it already holds needs no owner.
    // if_nametoindex (one SIOCGIFINDEX) costs a few microseconds, an RTM_GETLINK about 0.1 ms.
    // The name cannot point elsewhere meanwhile: the device lives while `fds` are open, and
    // renaming it needs CAP_NET_ADMIN.
    const ifindex = libc.if_nametoindex(request.name) as number;
    if (ifindex === 0) fail('if_nametoindex', `tap ${request.name}`);
    return { name: request.name, ifindex, flags, fds };
  } catch (error) {
    closeAll(fds);
    throw error;
  }
}

export { IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, SystemError };

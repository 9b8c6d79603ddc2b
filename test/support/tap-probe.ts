// A small client run as a test user: gets a tap through the client library, reports what the
// descriptor is, optionally exchanges an ARP request with the bridge, and holds the fd until
// its stdin closes. Prints one JSON line.
//
// Usage: node tap-probe.js NETWORK [--queues N] [--vnet] [--arp SENDER_IP TARGET_IP]
//                          [--tamper persist|owner|mac] [--hold]
// --tamper does, on the received fd, what a hostile holder could: TUNSETPERSIST, TUNSETOWNER
// (to the caller's uid) or SIOCSIFHWADDR (to 52:54:00:66:66:66).

import { readSync, writeSync, closeSync } from 'node:fs';
import { openTap } from '../../src/client/client.js';
import { tapInfo } from '../../src/sys/tun.js';
import { setNonBlocking } from '../../src/sys/fd.js';
import { libc } from '../../src/sys/libc.js';

function ipBytes(ip: string): number[] {
  return ip.split('.').map(Number);
}

/** Writes an ARP who-has for `target` from `sender` and waits up to 3 s for the reply. */
function arpExchange(fd: number, senderIp: string, targetIp: string): boolean {
  const mac = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
  const frame = Buffer.from([
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...mac, 0x08, 0x06,
    0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, ...mac, ...ipBytes(senderIp), 0, 0, 0, 0, 0, 0, ...ipBytes(targetIp),
  ]);
  writeSync(fd, frame);
  const buffer = Buffer.alloc(65536);
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    try {
      readSync(fd, buffer, 0, buffer.length, null);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      continue;
    }
    const isArpReply = buffer.readUInt16BE(12) === 0x0806 && buffer.readUInt16BE(20) === 2;
    if (isArpReply && buffer.subarray(28, 32).equals(Buffer.from(ipBytes(targetIp)))) return true;
  }
  return false;
}

/** Runs one ioctl a descriptor holder may run without capabilities; returns its result. */
function tamperWith(fd: number, name: string, how: string): number {
  if (how === 'persist') return libc.ioctlPtr(fd, 0x400454cb /* TUNSETPERSIST */, 'unsigned long', 1);
  if (how === 'owner') return libc.ioctlPtr(fd, 0x400454cc /* TUNSETOWNER */, 'unsigned long', process.getuid!());
  const ifreq = Buffer.alloc(40);
  ifreq.write(name);
  ifreq.writeUInt16LE(1 /* ARPHRD_ETHER */, 16);
  Buffer.from([0x52, 0x54, 0x00, 0x66, 0x66, 0x66]).copy(ifreq, 18);
  return libc.ioctlPtr(fd, 0x8924 /* SIOCSIFHWADDR */, 'void *', ifreq);
}

const [network, ...rest] = process.argv.slice(2);
const vnetHdr = rest.includes('--vnet');
const queues = rest.includes('--queues') ? Number(rest[rest.indexOf('--queues') + 1]) : 1;
const arp = rest.includes('--arp') ? rest.slice(rest.indexOf('--arp') + 1, rest.indexOf('--arp') + 3) : undefined;

try {
  const { grant, fds } = openTap({ network, queues, vnetHdr });
  const infos = fds.map((fd) => tapInfo(fd));
  let arpReply: boolean | undefined;
  if (arp) {
    // Non-blocking reads, so a missing reply ends in a timeout instead of a hang.
    setNonBlocking(fds[0]);
    arpReply = arpExchange(fds[0], arp[0], arp[1]);
  }
  const tamper = rest.includes('--tamper') ? rest[rest.indexOf('--tamper') + 1] : undefined;
  let tamperResult: number | undefined;
  if (tamper) tamperResult = tamperWith(fds[0], infos[0].name, tamper);
  process.stdout.write(`${JSON.stringify({ ok: true, grant, infos, arpReply, tamperResult })}\n`);
  if (rest.includes('--hold')) {
    const buffer = Buffer.alloc(1);
    try { while (readSync(0, buffer, 0, 1, null) > 0) { /* wait for EOF */ } } catch { /* stdin closed */ }
  }
  for (const fd of fds) closeSync(fd);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: (error as Error).message, name: (error as Error).name, code: (error as { code?: string }).code })}\n`);
  process.exitCode = 1;
}

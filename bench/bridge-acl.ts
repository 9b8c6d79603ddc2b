// An ACL for QEMU's qemu-bridge-helper, visible only to the calling process.
//
// Debian's helper (qemu-system-common 7.2) reads only /etc/qemu/bridge.conf, and the benchmark
// must not change the host's /etc. So a worker running in its own private mount namespace lays
// an overlay over /etc whose upper layer adds qemu/bridge.conf, and the file never appears on the host.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BRIDGE_HELPER = '/usr/lib/qemu/qemu-bridge-helper';

/** Returns the mount namespace of this process, as `mnt:[INODE]`. */
export function mountNamespace(): string {
  return readlinkSync('/proc/self/ns/mnt');
}

/**
 * Mounts an overlay on /etc that adds qemu/bridge.conf with one `allow` line per bridge.
 * `directory` must be empty scratch space on a local file system; the caller removes it after
 * this process exits.
 * @param hostNamespace the orchestrator's mount namespace (from `mountNamespace`).
 * @throws Error when this process is still in `hostNamespace`, where the mount would change
 *   the host.
 */
export function installBridgeAcl(directory: string, bridges: readonly string[], hostNamespace: string): void {
  if (mountNamespace() === hostNamespace) {
    throw new Error('Refusing to mount over /etc in the host\'s mount namespace; run this worker under "unshare --mount --propagation private"');
  }
  const upper = join(directory, 'upper');
  const work = join(directory, 'work');
  mkdirSync(join(upper, 'qemu'), { recursive: true });
  mkdirSync(work, { recursive: true });
  writeFileSync(join(upper, 'qemu', 'bridge.conf'), bridges.map((bridge) => `allow ${bridge}\n`).join(''), { mode: 0o644 });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/etc,upperdir=${upper},workdir=${work}`, '/etc'], { stdio: ['ignore', 'ignore', 'pipe'] });
}

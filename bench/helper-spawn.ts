// Runs a bridge helper the way QEMU 7.2 does in net_bridge_run_helper (net/tap.c). QEMU creates
// a Unix socketpair and starts `HELPER --use-vnet --fd=N --br=BRIDGE` with one end as fd N. It
// then blocks in recvmsg for the tap's descriptor on the other end (retrying on EINTR) and waits
// for the helper to exit, and it uses the descriptor only when the helper exited with status 0.

import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { socketPair, recvWithFds } from '../src/sys/unix.js';
import { closeAll, closeFd } from '../src/sys/fd.js';
import { tapInfo, IFF_TAP } from '../src/sys/tun.js';
import { SystemError } from '../src/sys/errors.js';
import { elapsedMs } from './stats.js';

export interface HelperCommand {
  /** Executable QEMU would run (its helper= value). */
  path: string;
  /** Arguments before QEMU's: the script, when `path` is an interpreter. */
  args?: string[];
  /** Environment of the helper, as QEMU would pass its own. */
  env: Record<string, string>;
  /** Run as this user instead of root. */
  user?: { uid: number; gid: number };
}

export interface HelperSample {
  /** From starting the helper to the descriptor's arrival. */
  fdMs: number;
  /** From starting the helper to its exit with status 0: when QEMU starts using the tap. */
  usableMs: number;
  /** Name of the tap the descriptor belongs to. */
  tap: string;
}

/** The helper's descriptor number in the child: the first one after stdin, stdout and stderr. */
const CHILD_FD = 3;
const HELPER_TIMEOUT_MS = 10_000;

/** PATH for helpers: the system directories plus the one holding this Node binary. */
export function helperPath(): string {
  return [dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':');
}

/**
 * Blocks in recvmsg for the helper's one-byte message, as QEMU does, and returns the
 * descriptors it carried. SO_RCVTIMEO bounds the wait; end of stream means the helper exited
 * without sending.
 */
function receiveDescriptor(fd: number): number[] {
  for (;;) {
    try {
      return recvWithFds(fd, 1, 1).fds;
    } catch (error) {
      // A socket with a receive timeout is not restarted after a signal handler (signal(7)),
      // so Node's SIGCHLD handler interrupts the call; QEMU retries on EINTR as well.
      if (!(error instanceof SystemError && error.code === 'EINTR')) throw error;
    }
  }
}

/**
 * Runs `helper` once for `bridge` and returns its timings; the tap's descriptor is closed
 * before returning, which removes the tap.
 * @throws Error with the helper's stderr when it sends no tap descriptor or exits non-zero.
 */
export async function runHelperOnce(helper: HelperCommand, bridge: string): Promise<HelperSample> {
  const [parentEnd, childEnd] = socketPair(HELPER_TIMEOUT_MS);
  let stderr = '';
  const start = process.hrtime.bigint();
  let child;
  try {
    child = spawn(helper.path, [...(helper.args ?? []), '--use-vnet', `--fd=${CHILD_FD}`, `--br=${bridge}`], {
      stdio: ['ignore', 'ignore', 'pipe', childEnd],
      env: helper.env,
      uid: helper.user?.uid,
      gid: helper.user?.gid,
    });
  } finally {
    // The child holds its own copy; QEMU also closes its end right after fork.
    closeFd(childEnd);
  }
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
  const exited = new Promise<{ code: number | null; at: bigint }>((resolve) => {
    child.once('exit', (code) => resolve({ code, at: process.hrtime.bigint() }));
  });

  let fds: number[] = [];
  let fdAt: bigint;
  try {
    fds = receiveDescriptor(parentEnd);
    fdAt = process.hrtime.bigint();
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${helper.path} sent no descriptor: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    closeFd(parentEnd);
  }

  try {
    const exit = await exited;
    if (fds.length !== 1 || exit.code !== 0) {
      throw new Error(`${helper.path} --br=${bridge} failed: exit status ${exit.code}, ${fds.length} descriptors received\n${stderr}`);
    }
    const info = tapInfo(fds[0]);
    if ((info.flags & IFF_TAP) === 0) throw new Error(`${helper.path} sent a descriptor that is not a tap (flags 0x${info.flags.toString(16)})`);
    return { fdMs: elapsedMs(start, fdAt), usableMs: elapsedMs(start, exit.at), tap: info.name };
  } finally {
    closeAll(fds);
  }
}

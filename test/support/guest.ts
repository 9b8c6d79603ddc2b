// Helpers for booting the test guest built by scripts/build-guest.sh and for
// reading the TAPGATE-GUEST lines that its /init writes to the serial console.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export interface GuestPaths {
  kernel: string;
  initramfs: string;
}

export interface GuestQemuOptions extends GuestPaths {
  /** Extra kernel parameters, such as `tg.ip=10.99.0.2/24` or `tg.ping=10.99.0.1`. */
  append: string[];
  /** Guest memory in MiB, 256 when omitted. */
  memoryMiB?: number;
}

export interface GuestReport {
  booted: boolean;
  mac?: string;
  ip?: string;
  dhcp?: 'ok' | 'fail';
  ping?: { ok: boolean; target: string };
  done: boolean;
}

/** The build downloads a kernel package (70 MB for Debian 12's 6.1 kernel), so it may take minutes. */
const BUILD_TIMEOUT_MS = 10 * 60 * 1000;

export function guestPaths(repoRoot: string): GuestPaths {
  const guestDir = join(repoRoot, '.cache', 'guest');
  return {
    kernel: join(guestDir, 'vmlinuz'),
    initramfs: join(guestDir, 'initramfs.cpio.gz'),
  };
}

/**
 * Builds the guest unless the cached one is current. A build needs root, but a
 * current cache is reused as any user. Throws with the script's output on failure.
 */
export function ensureGuest(repoRoot: string): void {
  const script = join(repoRoot, 'scripts', 'build-guest.sh');
  const result = spawnSync('bash', [script], {
    cwd: repoRoot,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: BUILD_TIMEOUT_MS,
  });
  if (result.error !== undefined || result.status !== 0) {
    const reason = result.error !== undefined
      ? result.error.message
      : `exit status ${result.status ?? `signal ${result.signal}`}`;
    throw new Error(
      `build of the test guest failed (${script}: ${reason})\n${result.stdout}${result.stderr}`,
    );
  }
}

/**
 * Returns qemu-system-x86_64 arguments for a headless TCG boot with the serial
 * console on stdio. QEMU exits when the guest powers off or panics. Callers
 * add their own -netdev and -device options.
 */
export function guestQemuArgs(opts: GuestQemuOptions): string[] {
  const kernelParams = ['console=ttyS0', 'panic=-1', 'quiet', ...opts.append];
  return [
    '-accel', 'tcg',
    '-m', String(opts.memoryMiB ?? 256),
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    '-monitor', 'none',
    '-no-reboot',
    '-kernel', opts.kernel,
    '-initrd', opts.initramfs,
    '-append', kernelParams.join(' '),
  ];
}

const REPORT_LINE = /TAPGATE-GUEST (\S+)(?: (.*))?$/;

/** Parses the serial output of one guest boot. When a key repeats, the last line wins. */
export function parseGuestReport(serialOutput: string): GuestReport {
  const report: GuestReport = { booted: false, done: false };

  for (const line of serialOutput.split(/\r?\n/)) {
    const match = REPORT_LINE.exec(line.trimEnd());
    if (match === null) {
      continue;
    }
    const word = match[1] ?? '';
    const rest = (match[2] ?? '').trim();
    const separator = word.indexOf('=');
    const key = separator === -1 ? word : word.slice(0, separator);
    const value = separator === -1 ? '' : word.slice(separator + 1);

    switch (key) {
      case 'boot':
        report.booted = true;
        break;
      case 'mac':
        report.mac = value;
        break;
      case 'ip':
        report.ip = value;
        break;
      case 'dhcp':
        if (value === 'ok' || value === 'fail') {
          report.dhcp = value;
        }
        break;
      case 'ping':
        report.ping = { ok: value === 'ok', target: rest };
        break;
      case 'done':
        report.done = true;
        break;
    }
  }

  return report;
}

// The machine and software versions a benchmark run used, for the results and the page.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { unitNodeOptions } from './fixture.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  /** Whether /dev/kvm exists; the guests run under TCG either way. */
  kvmDevice: boolean;
}

export interface Versions {
  tapgate: string;
  commit: string;
  node: string;
  kernel: string;
  qemu: string;
  qemuBridgeHelper: string;
  dnsmasq: string;
  passt: string;
  iperf3: string;
  /** The guest kernel package, from .cache/guest/build.stamp. */
  guestKernel: string;
  /** NODE_OPTIONS the daemon ran with: the systemd unit's, see unitNodeOptions in fixture.ts. */
  daemonNodeOptions: string;
}

function firstLine(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error || result.status !== 0) return 'not installed';
  return `${result.stdout}${result.stderr}`.trim().split('\n')[0];
}

function packageVersion(name: string): string {
  const result = spawnSync('dpkg-query', ['-W', '-f=${Version}', name], { encoding: 'utf8' });
  return result.status === 0 && result.stdout ? `Debian package ${name} ${result.stdout}` : `package ${name} not installed`;
}

export function describeMachine(): Machine {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  return {
    cpuModel: model.trim(),
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    kvmDevice: existsSync('/dev/kvm'),
  };
}

export function describeVersions(repoRoot: string): Versions {
  const packageJson = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const commit = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const changed = spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  const stampPath = join(repoRoot, '.cache', 'guest', 'build.stamp');
  const guestKernel = existsSync(stampPath) ? /^kernel-package (.+)$/m.exec(readFileSync(stampPath, 'utf8'))?.[1] ?? 'unknown' : 'guest not built';
  return {
    tapgate: packageJson.version,
    commit: commit.status === 0 ? `${commit.stdout.trim()}${changed.stdout.trim() ? ' with uncommitted changes' : ''}` : 'unknown',
    node: process.version,
    kernel: release(),
    qemu: firstLine('qemu-system-x86_64', ['--version']),
    qemuBridgeHelper: packageVersion('qemu-system-common'),
    dnsmasq: firstLine('dnsmasq', ['--version']),
    // passt from Debian 12 prints "passt unknown version", so the package version is reported.
    passt: packageVersion('passt'),
    iperf3: firstLine('iperf3', ['--version']),
    guestKernel,
    daemonNodeOptions: unitNodeOptions() || 'none',
  };
}

// The installed helper works from wherever QEMU or libvirt expects it: installed, copied to
// another directory, or symlinked, with no setuid bit and no file capabilities.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privilegedSkipReason, REPO_ROOT } from '../support/env.js';
import { Namespace } from '../support/netns.js';
import { asUser, createUser, removeUser, type TestUser } from '../support/users.js';
import { startDaemon, type DaemonHandle } from '../support/daemon.js';

/**
 * Runs `helper --use-vnet --br=BRIDGE --fd=3` as `user` the way QEMU does, with fd 3 one end of
 * a socketpair, and returns how many descriptors arrived on the other end plus the exit status.
 */
function runHelperLikeQemu(user: TestUser, helper: string, bridge: string, socket: string): { status: number | null; fds: number; stderr: string } {
  const python = `
import array, socket, subprocess, sys
parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
process = subprocess.run(sys.argv[1:] + ["--use-vnet", "--br=${bridge}", "--fd=%d" % child.fileno()], pass_fds=[child.fileno()], capture_output=True, text=True)
child.close()
parent.settimeout(2)
fds = array.array("i")
try:
    data, ancillary, flags, address = parent.recvmsg(16, socket.CMSG_SPACE(64))
    for level, kind, payload in ancillary:
        fds.frombytes(payload[: len(payload) - len(payload) % 4])
except socket.timeout:
    pass
print(len(fds))
sys.stderr.write(process.stderr)
sys.exit(process.returncode)
`;
  const result = spawnSync(asUser(user)[0], [...asUser(user).slice(1), 'env', `TAPGATE_SOCKET=${socket}`, 'python3', '-c', python, helper], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, fds: Number(result.stdout.trim()), stderr: result.stderr };
}

describe('installed helper', { skip: privilegedSkipReason() }, () => {
  let ns: Namespace;
  let daemon: DaemonHandle;
  let user: TestUser;
  let prefix: string;

  before(async () => {
    prefix = mkdtempSync(join(tmpdir(), 'tapgate-install-'));
    chmodSync(prefix, 0o755);
    execFileSync('bash', [join(REPO_ROOT, 'scripts', 'install.sh'), '--prefix', join(prefix, 'usr'), '--sysconfdir', join(prefix, 'etc'), '--no-systemd']);
    ns = new Namespace('tg-install');
    ns.addBridge('virbr0');
    user = createUser();
    daemon = await startDaemon(ns, `[networks.virbr0]\nbridge = "virbr0"\n\n[[allow]]\nusers = ["${user.name}"]\nnetworks = ["virbr0"]\n`);
  });

  after(async () => {
    await daemon?.stop();
    ns?.destroy();
    if (user) removeUser(user);
    if (prefix) rmSync(prefix, { recursive: true, force: true });
  });

  test('installed helper has no special privileges', () => {
    const mode = statSync(join(prefix, 'usr', 'libexec', 'tapgate-helper')).mode;
    assert.equal(mode & 0o6000, 0, 'no setuid or setgid bit');
    const capabilities = spawnSync('getcap', [join(prefix, 'usr', 'libexec', 'tapgate-helper')], { encoding: 'utf8' });
    assert.equal(capabilities.status, 0, `getcap failed: ${capabilities.error ?? capabilities.stderr}`);
    assert.equal(capabilities.stdout.trim(), '', 'no file capabilities');
  });

  test('helper works installed, copied and symlinked', async () => {
    const installed = join(prefix, 'usr', 'libexec', 'tapgate-helper');
    const copied = join(prefix, 'elsewhere', 'qemu-bridge-helper');
    const linked = join(prefix, 'linked-helper');
    execFileSync('install', ['-D', '-m', '0755', installed, copied]);
    symlinkSync(installed, linked);
    for (const helper of [installed, copied, linked]) {
      const result = runHelperLikeQemu(user, helper, 'virbr0', daemon.socket);
      assert.equal(result.status, 0, `${helper}: ${result.stderr}`);
      assert.equal(result.fds, 1, helper);
      assert.equal(result.stderr, '', `${helper} prints nothing on success`);
    }
    // QEMU picks the guest MAC on the helper path, so the daemon must not claim one. The
    // daemon's log arrives over a pipe that spawnSync kept this process from reading.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const grants = daemon.output().split('\n').filter((line) => line.includes('"decision":"granted"'));
    assert.equal(grants.length, 3);
    for (const line of grants) assert.equal(JSON.parse(line).audit.mac, null, line);
  });

  test('copied wrapper keeps absolute paths', () => {
    const copy = join(prefix, 'copy-of-tapgate');
    copyFileSync(join(prefix, 'usr', 'bin', 'tapgate'), copy);
    chmodSync(copy, 0o755);
    const result = spawnSync(copy, ['--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /Usage: tapgate COMMAND/);
  });
});

// The demo behind `npm run demo`: an unprivileged user boots a guest on a bridge twice, once
// through `tapgate run` and once through QEMU's `-netdev bridge,helper=` option, and each
// guest pings the bridge. Everything lives in a namespace that is removed at the end.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Namespace } from '../test/support/netns.js';
import { asUser, createUser, removeUser, type TestUser } from '../test/support/users.js';
import { startDaemon, type DaemonHandle } from '../test/support/daemon.js';
import { guestPaths, guestQemuArgs, parseGuestReport } from '../test/support/guest.js';
import { tapgateScript, userReadableRoot } from '../test/support/env.js';

const BRIDGE = 'tgdemo0';
const BRIDGE_ADDRESS = '10.123.0.1';

let namespace: Namespace | undefined;
let daemon: DaemonHandle | undefined;
let user: TestUser | undefined;
const children = new Set<ReturnType<typeof spawn>>();

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function cleanUp(): Promise<void> {
  for (const child of children) child.kill('SIGKILL');
  await daemon?.stop();
  namespace?.destroy();
  if (user) removeUser(user);
  say('cleaned up: daemon stopped, namespace, bridge and demo user removed');
}

/** Runs a command as the demo user and resolves with its output and exit status. */
function runAsUser(command: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const prefix = asUser(user!);
  const child = spawn(prefix[0], [...prefix.slice(1), 'env', ...Object.entries(env).map(([key, value]) => `${key}=${value}`), ...command]);
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => { stdout += chunk; });
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  return new Promise((resolve) => child.on('exit', (status) => {
    children.delete(child);
    resolve({ status, stdout, stderr });
  }));
}

async function bootGuest(label: string, command: string[], guestAddress: string): Promise<boolean> {
  const started = Date.now();
  const result = await runAsUser(command, { TAPGATE_SOCKET: daemon!.socket });
  const report = parseGuestReport(result.stdout);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const tap = /tap (tg[0-9a-f]+)/.exec(result.stderr)?.[1];
  const ok = result.status === 0 && report.ping?.ok === true;
  say(`${label}: guest ${guestAddress} ping ${BRIDGE_ADDRESS}: ${ok ? 'ok' : 'FAILED'} (${seconds} s${tap ? `, tap ${tap}` : ''})`);
  if (!ok) say(`  QEMU exited with ${result.status}; its output:\n${result.stderr}${result.stdout}`);
  return ok;
}

async function main(): Promise<number> {
  const root = userReadableRoot();
  const guest = guestPaths(root);
  namespace = new Namespace('tgdemo');
  namespace.addBridge(BRIDGE, { cidr: `${BRIDGE_ADDRESS}/24` });
  user = createUser('tgdemo');
  say(`namespace ${namespace.name}: bridge ${BRIDGE} with address ${BRIDGE_ADDRESS}/24`);

  daemon = await startDaemon(namespace, `[networks.demo]\nbridge = "${BRIDGE}"\n\n[[allow]]\nusers = ["${user.name}"]\nnetworks = ["demo"]\n`);
  say(`daemon started (pid ${daemon.process.pid}); its policy allows user ${user.name} (uid ${user.uid}) on network "demo"`);
  say(`user ${user.name} has no capabilities; QEMU runs under TCG`);

  const qemu = (address: string) => ['qemu-system-x86_64', ...guestQemuArgs({ ...guest, append: [`tg.ip=${address}/24`, `tg.ping=${BRIDGE_ADDRESS}`] })];
  say(`guest 1: tapgate run --network demo -- qemu-system-x86_64 ...`);
  const first = await bootGuest('guest 1', [process.execPath, tapgateScript(root), 'run', '--network', 'demo', '--', ...qemu('10.123.0.2')], '10.123.0.2');
  const helper = join(root, 'bin', 'tapgate-helper');
  say(`guest 2: qemu-system-x86_64 -netdev bridge,br=${BRIDGE},helper=${helper} ...`);
  const second = await bootGuest('guest 2', [...qemu('10.123.0.3'), '-netdev', `bridge,id=n0,br=${BRIDGE},helper=${helper}`, '-device', 'virtio-net-pci,netdev=n0'], '10.123.0.3');
  return first && second ? 0 : 1;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    say(`interrupted by ${signal}`);
    void cleanUp().then(() => process.exit(130));
  });
}

let status = 1;
try {
  status = await main();
} catch (error) {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.stack : String(error)}\n`);
} finally {
  await cleanUp();
}
process.exitCode = status;

// Network namespaces that a test creates and removes, with helpers to run commands inside.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export class Namespace {
  readonly name: string;

  constructor(prefix: string) {
    this.name = `${prefix}-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', this.name]);
    this.ip('link', 'set', 'lo', 'up');
  }

  /** Runs `ip -n NS ARGS` and returns its stdout; throws with stderr on failure. */
  ip(...args: string[]): string {
    return execFileSync('ip', ['-n', this.name, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Runs `ip -n NS -json ARGS` and parses the result. */
  ipJson<T = unknown>(...args: string[]): T {
    const output = this.ip('-json', ...args).trim();
    return (output ? JSON.parse(output) : []) as T;
  }

  /** Runs a command inside the namespace and returns its result without throwing. */
  exec(command: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync('ip', ['netns', 'exec', this.name, command, ...args], { encoding: 'utf8', input });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  /** Creates a bridge, sets it up and returns its name. */
  addBridge(name: string, options: { mtu?: number; address?: string; cidr?: string } = {}): string {
    this.ip('link', 'add', name, 'type', 'bridge');
    if (options.address) this.ip('link', 'set', name, 'address', options.address);
    if (options.mtu) this.ip('link', 'set', name, 'mtu', String(options.mtu));
    if (options.cidr) this.ip('addr', 'add', options.cidr, 'dev', name);
    this.ip('link', 'set', name, 'up');
    return name;
  }

  /** Names of the interfaces attached to `bridge`, sorted. */
  ports(bridge: string): string[] {
    return this.ipJson<{ ifname: string }[]>('link', 'show', 'master', bridge).map((link) => link.ifname).sort();
  }

  /** Names of every interface in the namespace, sorted. */
  links(): string[] {
    return this.ipJson<{ ifname: string }[]>('link', 'show').map((link) => link.ifname).sort();
  }

  destroy(): void {
    spawnSync('ip', ['netns', 'del', this.name]);
  }
}

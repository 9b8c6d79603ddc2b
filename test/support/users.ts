// Unprivileged test users, created for a test run and removed afterwards.

import { execFileSync, spawn, spawnSync, type SpawnOptions, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
}

function idOf(flag: '-u' | '-g', name: string): number {
  return Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
}

/** Creates a system user without a home directory, with a primary group of the same name. */
export function createUser(prefix = 'tgt'): TestUser {
  const name = `${prefix}${randomBytes(3).toString('hex')}`;
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]);
  return { name, uid: idOf('-u', name), gid: idOf('-g', name) };
}

/** Creates a group and returns its name and gid. */
export function createGroup(prefix = 'tgg'): { name: string; gid: number } {
  const name = `${prefix}${randomBytes(3).toString('hex')}`;
  execFileSync('groupadd', ['--system', name]);
  return { name, gid: Number(execFileSync('getent', ['group', name], { encoding: 'utf8' }).split(':')[2]) };
}

export function addToGroup(user: TestUser, group: string): void {
  execFileSync('usermod', ['--append', '--groups', group, user.name]);
}

export function removeUser(user: TestUser): void {
  spawnSync('userdel', [user.name]);
  spawnSync('groupdel', [user.name]);
}

export function removeGroup(name: string): void {
  spawnSync('groupdel', [name]);
}

/** Returns the setpriv prefix that runs a command as `user` with its groups from /etc/group. */
export function asUser(user: TestUser): string[] {
  return ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--reset-env', '--'];
}

/** Runs a command as `user` and returns its result; `env` adds to the reset environment. */
export function runAs(user: TestUser, command: string, args: string[], options: { env?: Record<string, string>; timeout?: number; input?: string } = {}): SpawnSyncReturns<string> {
  const environment = Object.entries(options.env ?? {}).map(([key, value]) => `${key}=${value}`);
  return spawnSync(asUser(user)[0], [...asUser(user).slice(1), 'env', ...environment, command, ...args], {
    encoding: 'utf8', timeout: options.timeout ?? 60_000, input: options.input,
  });
}

/** Starts a command as `user` in the background. */
export function spawnAs(user: TestUser, command: string, args: string[], env: Record<string, string>, options: SpawnOptions = {}) {
  const environment = Object.entries(env).map(([key, value]) => `${key}=${value}`);
  return spawn(asUser(user)[0], [...asUser(user).slice(1), 'env', ...environment, command, ...args], options);
}

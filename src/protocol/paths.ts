// Fixed locations shared by the daemon and its clients.

export const DEFAULT_CONFIG = '/etc/tapgate/tapgate.toml';
export const DEFAULT_SOCKET = '/run/tapgate/tapgate.sock';

/**
 * Returns the daemon socket a client should use: $TAPGATE_SOCKET, else the default. The
 * variable only chooses which daemon to ask; it cannot widen what the daemon grants.
 */
export function clientSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TAPGATE_SOCKET || DEFAULT_SOCKET;
}

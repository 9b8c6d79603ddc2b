// The error type for start-up problems, shared by the daemon's start-up modules.

/** A start-up problem that ends the daemon with one message and no stack trace. */
export class DaemonStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DaemonStartError';
  }
}

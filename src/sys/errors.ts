// The one error type for failed kernel calls: operation, object and errno.

import { constants as osConstants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** Returns the symbolic name of an errno value, such as `ENODEV`. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

const errnoText: Record<string, string> = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EBUSY: 'device or resource busy',
  EEXIST: 'file exists',
  ENODEV: 'no such device',
  EINVAL: 'invalid argument',
  ENOTCONN: 'not connected',
  ECONNREFUSED: 'connection refused',
  EAGAIN: 'resource temporarily unavailable',
  ENOBUFS: 'no buffer space available',
  EOPNOTSUPP: 'operation not supported',
  ERANGE: 'result out of range',
  EPIPE: 'broken pipe',
  ENFILE: 'too many open files in system',
  EMFILE: 'too many open files',
  EBADF: 'bad file descriptor',
  ENOTSOCK: 'socket operation on non-socket',
  ETIMEDOUT: 'connection timed out',
};

/** Returns the usual lower-case description of an errno name. */
export function errnoDescription(name: string): string {
  return errnoText[name] ?? name;
}

/**
 * A failed system call, ioctl or netlink request.
 *
 * `operation` is the call (`ioctl(TUNSETIFF)`, `RTM_NEWLINK`), `object` what it acted on
 * (`/dev/net/tun`, `tap tg0a1b2c3d`), `detail` the kernel's extended-ack text when it sent one.
 */
export class SystemError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly operation: string;
  readonly object: string;
  readonly detail: string | undefined;

  constructor(operation: string, object: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    const reason = detail ? `${detail} (${code})` : `${errnoDescription(code)} (${code})`;
    super(`${operation} on ${object} failed: ${reason}`);
    this.name = 'SystemError';
    this.errno = errno;
    this.code = code;
    this.operation = operation;
    this.object = object;
    this.detail = detail;
  }
}

// File descriptor helpers shared by the other sys/ modules.

import { libc, lastErrno } from './libc.js';
import { SystemError } from './errors.js';
import { F_GETFL, F_SETFL, O_NONBLOCK } from './constants.js';

/** Closes a descriptor this process owns; errors are ignored because the fd is gone either way. */
export function closeFd(fd: number): void {
  if (fd >= 0) libc.close(fd);
}

/** Closes every descriptor in the list. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}

/** Throws a SystemError for the errno of the call that just returned -1. */
export function fail(operation: string, object: string): never {
  throw new SystemError(operation, object, lastErrno());
}

/** Sets O_NONBLOCK on a descriptor, so reads return EAGAIN instead of waiting. */
export function setNonBlocking(fd: number): void {
  // Safety: F_GETFL and F_SETFL take and return plain ints.
  const flags = libc.fcntl(fd, F_GETFL, 'int', 0);
  if (flags < 0) fail('fcntl(F_GETFL)', `fd ${fd}`);
  if (libc.fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK) < 0) fail('fcntl(F_SETFL)', `fd ${fd}`);
}

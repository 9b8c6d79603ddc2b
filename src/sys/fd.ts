// File descriptor helpers shared by the other sys/ modules.

import { libc, lastErrno } from './libc.js';
import { SystemError } from './errors.js';

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

// The only module that loads the FFI library: raw libc functions and their calling conventions.
//
// Every function here is declared exactly as glibc exports it on x86_64 and aarch64 Linux.
// Pointer arguments are Node Buffers, which koffi passes as the address of their memory, or
// bigint addresses taken with `addressOf`. A Buffer whose address is written into another
// structure must stay referenced until the call that reads it returns; the callers keep every
// such Buffer in a local variable for that reason.

import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

export const libc = {
  open: lib.func('int open(const char *path, int flags, ...)'),
  close: lib.func('int close(int fd)'),
  ioctlPtr: lib.func('int ioctl(int fd, unsigned long request, ...)'),
  if_nametoindex: lib.func('unsigned int if_nametoindex(const char *name)'),
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, void *addr, uint32_t addrlen)'),
  connect: lib.func('int connect(int fd, void *addr, uint32_t addrlen)'),
  socketpair: lib.func('int socketpair(int domain, int type, int protocol, void *sv)'),
  send: lib.func('intptr_t send(int fd, void *buf, size_t len, int flags)'),
  recv: lib.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  sendmsg: lib.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: lib.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)'),
  fcntl: lib.func('int fcntl(int fd, int cmd, ...)'),
  getpwuid_r: lib.func('int getpwuid_r(uint32_t uid, void *pwd, void *buf, size_t buflen, _Out_ void **result)'),
  getpwnam_r: lib.func('int getpwnam_r(const char *name, void *pwd, void *buf, size_t buflen, _Out_ void **result)'),
  getgrnam_r: lib.func('int getgrnam_r(const char *name, void *grp, void *buf, size_t buflen, _Out_ void **result)'),
  getgrgid_r: lib.func('int getgrgid_r(uint32_t gid, void *grp, void *buf, size_t buflen, _Out_ void **result)'),
  getgrouplist: lib.func('int getgrouplist(const char *user, uint32_t group, void *groups, _Inout_ int *ngroups)'),
  // Raw system calls, for the per-thread credential changes in credentials.ts: glibc's own
  // setgroups() applies to every thread of the process.
  syscall: lib.func('long syscall(long number, ...)'),
  // Capability sets and re-execution, for capabilities.ts.
  prctl: lib.func('int prctl(int option, ...)'),
  capget: lib.func('int capget(void *header, void *data)'),
  capset: lib.func('int capset(void *header, void *data)'),
  // argv and envp are JS arrays of strings that end with null; koffi builds the char * arrays.
  execve: lib.func('int execve(const char *path, const char **argv, const char **envp)'),
};

/** Returns the errno value the last libc call on this thread left behind. */
export function lastErrno(): number {
  return koffi.errno();
}

/** Returns the address of a Buffer's memory, for embedding in a kernel structure. */
export function addressOf(buffer: Buffer): bigint {
  return koffi.address(buffer);
}

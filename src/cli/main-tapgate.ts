#!/usr/bin/env node
// Entry point of the `tapgate` command.

// The daemon keeps one libuv thread-pool thread in the link-event read and closes sent tap
// descriptors on the pool, where each teardown takes milliseconds. libuv sizes the pool on its
// first use, so the size is set before any module that might use it is loaded.
if (process.argv[2] === 'daemon') process.env.UV_THREADPOOL_SIZE ??= '16';

const { main } = await import('./tapgate.js');
process.exitCode = await main(process.argv.slice(2));

// Follows the kernel's link notifications so that a lease ends as soon as its tap disappears,
// including when the VM was killed with SIGKILL and no client sent a last request.

import { read } from 'node:fs';
import { decodeLinkEvents, openLinkEvents, type LinkEvent } from '../sys/rtnl.js';
import { closeFd } from '../sys/fd.js';

/**
 * Starts reading link events; `onEvents` gets each batch, `onOverrun` is called when the
 * kernel dropped notifications (ENOBUFS) so the caller can re-read the full link list.
 * The blocking reads run on one libuv thread-pool thread. Returns a function that stops it.
 */
export function watchLinks(onEvents: (events: LinkEvent[]) => void, onOverrun: (error: Error) => void): () => void {
  const fd = openLinkEvents();
  const buffer = Buffer.alloc(256 * 1024);
  let stopped = false;

  const next = (): void => {
    read(fd, buffer, 0, buffer.length, null, (error, bytes) => {
      if (stopped) {
        closeFd(fd);
        return;
      }
      if (error?.code === 'EAGAIN') {
        // The read timed out without events (see openLinkEvents); read again.
      } else if (error) {
        onOverrun(error);
      } else {
        onEvents(decodeLinkEvents(buffer.subarray(0, bytes)));
      }
      next();
    });
  };
  next();

  // A read already blocked in the thread pool is not woken by close(), so stopping takes
  // effect when that read returns: at the next event or its timeout (LINK_EVENT_READ_TIMEOUT_MS).
  return () => {
    stopped = true;
  };
}

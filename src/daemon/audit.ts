// The audit log: one JSON line per decision and per lease end, appended to a file and
// copied to the daemon's log.
//
// Schema (every field present; null where it does not apply):
//   time      ISO 8601 UTC timestamp
//   event     "decision" or "lease-end"
//   uid, user, pid   the requester as the kernel reported it (pid: the connecting process)
//   request   the validated request ({op, network, queues, vnetHdr, mac}) or null
//   decision  "granted", "denied" or "error" for decisions; "ended" for lease ends
//   rule      the deciding rule as "allow rule "label" at FILE:LINE", or null
//   reason    a sentence saying why
//   network, bridge, tap, mac, lease   the lease's network, bridge, tap name, guest MAC and id

import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from './log.js';

export interface AuditRecord {
  event: 'decision' | 'lease-end';
  uid: number;
  user: string | null;
  pid: number | null;
  request: Record<string, unknown> | null;
  decision: 'granted' | 'denied' | 'error' | 'ended';
  rule: string | null;
  reason: string;
  network: string | null;
  bridge: string | null;
  tap: string | null;
  mac: string | null;
  lease: string | null;
}

export class AuditLog {
  private failedWrites = 0;

  constructor(private path: string | undefined, private readonly logger: Logger) {
    if (path) mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
  }

  /** Changes the file that later records go to (after a policy reload). */
  setPath(path: string | undefined): void {
    if (path) mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    this.path = path;
  }

  /**
   * Appends one record. The write is synchronous so that a record is on disk before the
   * requester gets its tap; a failed write is logged and counted, never thrown.
   */
  record(record: AuditRecord): void {
    const line = JSON.stringify({ time: new Date().toISOString(), ...record });
    this.logger.log(record.decision === 'error' ? 'warn' : 'info', 'audit', { audit: JSON.parse(line) });
    if (!this.path) return;
    try {
      appendFileSync(this.path, `${line}\n`, { mode: 0o640 });
    } catch (error) {
      this.failedWrites++;
      this.logger.log('error', 'Writing the audit log failed', { path: this.path, error: String(error), failedWrites: this.failedWrites });
    }
  }
}

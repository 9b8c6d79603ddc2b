// The audit log: one JSON line per decision and per lease end, appended to a file and
// copied to the daemon's log. The record's fields are described in protocol/audit-record.ts.

import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from './log.js';
import type { AuditRecord } from '../protocol/audit-record.js';

export type { AuditRecord };

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

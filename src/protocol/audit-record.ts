// The audit log's record format, written by the daemon and read by `tapgate audit`.
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

/** One audit line without its time; the daemon adds `time` when it writes the line. */
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

/** One audit line as read back from the file. */
export type AuditEntry = AuditRecord & { time: string };

// Requests and replies of protocol version 1, and the validation of everything a client sends.

import { interfaceNameProblem } from './names.js';

export const PROTOCOL_VERSION = 1;
/** The recorded guest MAC when QEMU, not the daemon, chooses it (the bridge-helper path). */
export const UNKNOWN_MAC = 'unknown';
/** The kernel's limit on queues per tap (MAX_TAP_QUEUES in include/linux/if_tun.h is 256). */
export const MAX_QUEUES = 256;

export interface OpenTapRequest {
  version: number;
  op: 'open-tap';
  /** A network name from the policy, or the name of its bridge. */
  network: string;
  queues: number;
  vnetHdr: boolean;
  /** The guest's MAC address; the daemon picks one when absent. */
  mac?: string;
  /** Set by the bridge helper: QEMU picks the guest MAC, so the daemon records it as unknown. */
  macChosenByVmm?: boolean;
}

export interface StatusRequest {
  version: number;
  op: 'status';
}

export interface CheckRequest {
  version: number;
  op: 'check';
  network: string;
  /** Whose access to explain, as a user name or decimal uid; honoured only for root. */
  user?: string;
}

/** Asks the daemon to re-read its policy file; honoured only for root. */
export interface ReloadRequest {
  version: number;
  op: 'reload';
}

/** Asks for the facts `tapgate doctor` needs; see protocol/diagnose.ts for the reply. */
export interface DiagnoseRequest {
  version: number;
  op: 'diagnose';
  /** A network or bridge name; every network when absent. */
  network?: string;
}

export type Request = OpenTapRequest | StatusRequest | CheckRequest | DiagnoseRequest | ReloadRequest;

export interface TapGrant {
  name: string;
  ifindex: number;
  network: string;
  bridge: string;
  mtu: number;
  /** MAC address for the guest's NIC, or UNKNOWN_MAC when the VMM chooses it. */
  mac: string;
  vnetHdr: boolean;
  queues: number;
  lease: string;
}

export type ErrorCode =
  | 'bad-request'
  | 'unsupported-version'
  | 'denied'
  | 'quota'
  | 'unknown-network'
  | 'bridge-missing'
  | 'not-a-bridge'
  | 'tun-unavailable'
  | 'device-error'
  | 'policy-error'
  | 'rate-limited'
  | 'internal';

export interface ErrorReply {
  version: number;
  ok: false;
  error: { code: ErrorCode; message: string };
}

export interface OpenTapReply {
  version: number;
  ok: true;
  op: 'open-tap';
  tap: TapGrant;
}

export type Reply = ErrorReply | OpenTapReply | { version: number; ok: true; op: 'status' | 'check' | 'diagnose' | 'reload'; [key: string]: unknown };

/** Raised for a request that is not well-formed; the message goes back to the client verbatim. */
export class RequestError extends Error {
  constructor(message: string, readonly code: ErrorCode = 'bad-request') {
    super(message);
    this.name = 'RequestError';
  }
}

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Returns why `mac` cannot be a guest NIC address, or undefined when it can. */
export function macProblem(mac: string): string | undefined {
  if (!MAC_PATTERN.test(mac)) return 'must be six lower-case hex octets separated by ":"';
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) return 'is a multicast address';
  if (mac === '00:00:00:00:00:00') return 'is all zeros';
  return undefined;
}

const ALLOWED_FIELDS: Record<Request['op'], readonly string[]> = {
  'open-tap': ['version', 'op', 'network', 'queues', 'vnetHdr', 'mac', 'macChosenByVmm'],
  status: ['version', 'op'],
  check: ['version', 'op', 'network', 'user'],
  diagnose: ['version', 'op', 'network'],
  reload: ['version', 'op'],
};

function checkNetworkName(value: unknown): string {
  if (typeof value !== 'string') throw new RequestError('Field "network" must be a string');
  const problem = interfaceNameProblem(value);
  if (problem) throw new RequestError(`Invalid bridge or network name ${JSON.stringify(value)}: ${problem}`);
  return value;
}

/** Accepts a user name as useradd allows it (at most 32 characters) or a decimal uid. */
function checkUserName(value: unknown): string {
  if (typeof value !== 'string' || !/^([a-z_][a-z0-9_.-]{0,30}\$?|[0-9]{1,10})$/i.test(value)) {
    throw new RequestError(`Invalid user ${JSON.stringify(value)}: expected a user name of up to 32 letters, digits, "_", "." or "-", or a decimal uid`);
  }
  return value;
}

/**
 * Parses and validates one request body. Unknown fields are rejected with the same message
 * whatever their value, so that a field holding a path reveals nothing about that path.
 * @throws RequestError naming the field and what is accepted.
 */
export function parseRequest(body: Buffer): Request {
  let message: unknown;
  try {
    message = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RequestError('Request is not valid JSON');
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new RequestError('Request must be a JSON object');
  }
  const fields = message as Record<string, unknown>;
  if (fields.version !== PROTOCOL_VERSION) {
    throw new RequestError(`Unsupported protocol version ${JSON.stringify(fields.version)}; this daemon speaks version ${PROTOCOL_VERSION}`, 'unsupported-version');
  }
  const op = fields.op;
  if (op !== 'open-tap' && op !== 'status' && op !== 'check' && op !== 'diagnose' && op !== 'reload') {
    throw new RequestError(`Unknown operation ${JSON.stringify(op)}; expected "open-tap", "status", "check", "diagnose" or "reload"`);
  }
  for (const key of Object.keys(fields)) {
    if (!ALLOWED_FIELDS[op].includes(key)) throw new RequestError(`Unsupported argument ${JSON.stringify(key)}`);
  }

  if (op === 'status') return { version: PROTOCOL_VERSION, op };
  if (op === 'reload') return { version: PROTOCOL_VERSION, op };
  if (op === 'check') {
    const request: CheckRequest = { version: PROTOCOL_VERSION, op, network: checkNetworkName(fields.network) };
    if (fields.user !== undefined) request.user = checkUserName(fields.user);
    return request;
  }
  if (op === 'diagnose') {
    return fields.network === undefined ? { version: PROTOCOL_VERSION, op } : { version: PROTOCOL_VERSION, op, network: checkNetworkName(fields.network) };
  }

  const queues = fields.queues ?? 1;
  if (typeof queues !== 'number' || !Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) {
    throw new RequestError(`Field "queues" must be an integer from 1 to ${MAX_QUEUES}, got ${JSON.stringify(queues)}`);
  }
  const vnetHdr = fields.vnetHdr ?? false;
  if (typeof vnetHdr !== 'boolean') throw new RequestError('Field "vnetHdr" must be true or false');
  const request: OpenTapRequest = { version: PROTOCOL_VERSION, op, network: checkNetworkName(fields.network), queues, vnetHdr };
  if (fields.mac !== undefined) {
    const problem = typeof fields.mac === 'string' ? macProblem(fields.mac) : 'must be a string';
    if (problem) throw new RequestError(`Invalid MAC address ${JSON.stringify(fields.mac)}: ${problem}`);
    request.mac = fields.mac as string;
  }
  if (fields.macChosenByVmm !== undefined) {
    if (typeof fields.macChosenByVmm !== 'boolean') throw new RequestError('Field "macChosenByVmm" must be true or false');
    if (fields.macChosenByVmm && request.mac !== undefined) throw new RequestError('Fields "mac" and "macChosenByVmm" exclude each other');
    if (fields.macChosenByVmm) request.macChosenByVmm = true;
  }
  return request;
}

// Framing on the daemon's socket: each message is a 4-byte big-endian length, then that many
// bytes of UTF-8 JSON. Descriptors travel with the first byte of a reply.

export const MAX_REQUEST_BYTES = 16 * 1024;
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;
const HEADER_BYTES = 4;

/** Encodes one message as a frame. */
export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** Raised when a peer announces a frame larger than the receiver accepts. */
export class FrameTooLargeError extends Error {
  constructor(readonly length: number, readonly maximum: number) {
    super(`Message of ${length} bytes exceeds the maximum of ${maximum} bytes`);
    this.name = 'FrameTooLargeError';
  }
}

/** Collects stream chunks and returns complete frame bodies as they become available. */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly maximum: number) {}

  /** Appends a chunk and returns the frame bodies it completed. */
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Buffer[] = [];
    while (this.pending.length >= HEADER_BYTES) {
      const length = this.pending.readUInt32BE(0);
      if (length > this.maximum) throw new FrameTooLargeError(length, this.maximum);
      if (this.pending.length < HEADER_BYTES + length) break;
      frames.push(this.pending.subarray(HEADER_BYTES, HEADER_BYTES + length));
      this.pending = this.pending.subarray(HEADER_BYTES + length);
    }
    return frames;
  }

  /** Number of bytes received that do not yet form a whole frame. */
  get buffered(): number {
    return this.pending.length;
  }
}

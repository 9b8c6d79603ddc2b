// The daemon's log: one JSON object per line on stderr, which journald and `jq` both read.

export type Level = 'error' | 'warn' | 'info' | 'debug';

export interface Logger {
  log(level: Level, message: string, fields?: Record<string, unknown>): void;
}

const LEVELS: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Creates a logger that writes lines at `threshold` and more severe to `write`. */
export function createLogger(threshold: Level, write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return {
    log(level, message, fields = {}) {
      if (LEVELS[level] > LEVELS[threshold]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
    },
  };
}

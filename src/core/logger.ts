/** The gateway's log sink: structured lines, never a secret in a field (the log ring scrubs known ones). */
import type { DispatchLog } from './dispatch.js';

export interface Logger extends DispatchLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

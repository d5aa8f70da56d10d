/**
 * The companion's local control channel: a unix socket in the companion dir (0700), itself 0600,
 * so only this user can reach it; nothing of it is reachable through the gateway or the node
 * transport. One JSON line in, one JSON line out, then the connection closes.
 *
 * The socket doubles as the single-instance guard: a second `companion run` finds it answering
 * and refuses; a socket file left by a dead process does not answer and is replaced.
 */
import { chmodSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Side } from './lifecycle.js';

export const CONTROL_SOCKET = 'control.sock';
/** Longest request line accepted (a setup code is at most 4096 characters). */
const MAX_REQUEST_BYTES = 16 * 1024;

export type ControlRequest =
  | { op: 'status' }
  | { op: 'apply-setup-code'; code: string }
  | { op: 'set-shared-token'; token: string }
  | { op: 'reconnect' | 'pause' | 'resume'; side: Side };

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

const SIDES = new Set(['operator', 'node']);

/** Validate what arrived on the socket; a problem string when it is not a request. */
export function parseControlRequest(text: string): ControlRequest | { problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { problem: 'not JSON' };
  }
  const r = v as Record<string, unknown>;
  if (typeof r !== 'object' || r === null || typeof r.op !== 'string') return { problem: 'no op' };
  switch (r.op) {
    case 'status':
      return { op: 'status' };
    case 'apply-setup-code':
      if (typeof r.code !== 'string' || r.code.length === 0 || r.code.length > 4096) return { problem: 'code must be a string of 1-4096 characters' };
      return { op: 'apply-setup-code', code: r.code };
    case 'set-shared-token':
      if (typeof r.token !== 'string' || r.token.trim().length === 0 || r.token.length > 4096) return { problem: 'token must be a non-empty string' };
      return { op: 'set-shared-token', token: r.token };
    case 'reconnect':
    case 'pause':
    case 'resume':
      if (typeof r.side !== 'string' || !SIDES.has(r.side)) return { problem: 'side must be "operator" or "node"' };
      return { op: r.op, side: r.side as Side };
    default:
      return { problem: `unknown op ${JSON.stringify(String(r.op).slice(0, 40))}` };
  }
}

/** The companion dir, created 0700 (and tightened if it exists looser). */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

export type ListenResult = { ok: true; server: Server; path: string } | { ok: false; pid: number | null };

/** Listen on `<dir>/control.sock`, unless a live companion already answers there. */
export async function listenControl(dir: string, handler: ControlHandler): Promise<ListenResult> {
  ensurePrivateDir(dir);
  const path = join(dir, CONTROL_SOCKET);
  const live = await askControl(dir, { op: 'status' }, 2_000).catch(() => null);
  if (live) return { ok: false, pid: typeof (live as { pid?: unknown }).pid === 'number' ? (live as { pid: number }).pid : null };
  try {
    unlinkSync(path); // left by a process that is gone (it did not answer)
  } catch {}
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES) {
        sock.end(`${JSON.stringify({ ok: false, code: 'CONTROL_REQUEST_TOO_LARGE', message: 'request too large' })}\n`);
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      sock.removeAllListeners('data');
      const req = parseControlRequest(line);
      if ('problem' in req) {
        sock.end(`${JSON.stringify({ ok: false, code: 'CONTROL_REQUEST_INVALID', message: req.problem })}\n`);
        return;
      }
      handler(req).then(
        (res) => sock.end(`${JSON.stringify(res)}\n`),
        (err: Error) => sock.end(`${JSON.stringify({ ok: false, code: 'INTERNAL_ERROR', message: err.message })}\n`),
      );
    });
  });
  // The socket file is created with the process umask; nobody else may even connect meanwhile (dir 0700).
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  return { ok: true, server, path };
}

/**
 * Ask the running companion; resolves with its answer, or null when none is running (no socket,
 * or nobody listening on it).
 */
export function askControl(dir: string, req: ControlRequest, timeoutMs = 30_000): Promise<unknown | null> {
  const path = join(dir, CONTROL_SOCKET);
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error(`the companion did not answer on ${path} within ${timeoutMs} ms`))), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      done(() => {
        try {
          resolve(JSON.parse(line));
        } catch {
          reject(new Error('the companion answered with something that is not JSON'));
        }
      });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') done(() => resolve(null));
      else done(() => reject(err));
    });
    sock.on('close', () => done(() => reject(new Error('the companion closed the control connection without answering'))));
  });
}

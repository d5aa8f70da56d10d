/**
 * Node-only helpers of the SDK's Node platform (certificate errors, durable files). Not part of
 * the package's public exports: clawgate's gateway side keeps its own copies (src/platform/).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { dirname } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';

/** Certificate errors that time will not fix: the server's certificate is not trusted here. */
export const CERT_ERROR_CODES: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** SHA-256 fingerprint of the certificate the server presented on this upgrade, null without one. */
export function peerFingerprint(res: IncomingMessage): string | null {
  const cert = (res.socket as TLSSocket).getPeerCertificate?.();
  return cert?.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : null;
}

/** Whether a process with this id exists (EPERM: it does, owned by another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * First half of a durable write: `content` in a fresh 0600 temp file next to `path`
 * (`<path>.<pid>.<hex>.tmp`, so a sweeper can tell a dead writer's leftovers), fsync'd.
 * Returns the temp file's path for `commitDurably`.
 */
export function writeTempDurably(path: string, content: string): string {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return tmp;
}

/** Second half: rename the temp file over `path` and fsync the directory so the rename survives power loss. */
export function commitDurably(tmp: string, path: string): void {
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/** fsync a directory, making renames and unlinks in it durable. */
export function syncDir(dir: string): void {
  fsyncPath(dir);
}

/** fsync a file or directory by path (for content another program wrote, e.g. openssl). */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Write a 0600 file so that after a crash or power loss it holds the old or the new content,
 * never a torn or empty one: temp file, fsync, rename, fsync the directory.
 */
export function writeFileDurably(path: string, content: string): void {
  commitDurably(writeTempDurably(path, content), path);
}

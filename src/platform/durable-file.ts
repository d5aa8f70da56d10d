/**
 * Durable files for the gateway, the CLI and the node host: a write either lands whole or not at
 * all, even across a crash or power loss. The client SDK keeps its own copy of these few lines
 * (it depends on the protocol package only), so neither side imports the other's internals.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

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

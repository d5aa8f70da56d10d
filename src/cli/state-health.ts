/**
 * Checks of the state directory and its SQLite database that `gateway run` makes before it
 * starts (a refusal names the path and what to do) and `clawgate doctor` reports one by one:
 * the directory writable, disk space left, the database file a healthy SQLite database, and no
 * other process holding its write lock. Each check reads or probes only: none changes state.
 */
import { closeSync, existsSync, openSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export interface HealthCheck {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  message: string;
}

export const SQLITE_FILE = 'clawgate.sqlite';
/** Below this much free space writes are about to fail: a warning. */
export const LOW_DISK_BYTES = 64 * 1024 * 1024;
/** Below this much the gateway cannot be expected to commit anything: a failure. */
export const FULL_DISK_BYTES = 1024 * 1024;

/** Can files be created in the state dir? Probed by writing one (root ignores permission bits; a read-only mount does not). */
export function stateDirCheck(dir: string): HealthCheck {
  if (!existsSync(dir)) return { name: 'state-dir', status: 'warn', message: `${dir} does not exist yet (created on first start)` };
  const probe = join(dir, `.clawgate-write-probe-${process.pid}`);
  try {
    const fd = openSync(probe, 'w', 0o600);
    try {
      writeSync(fd, 'x');
    } finally {
      closeSync(fd);
    }
    unlinkSync(probe);
    return { name: 'state-dir', status: 'ok', message: `${dir} is writable` };
  } catch (err) {
    try {
      unlinkSync(probe);
    } catch {
      // never created
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      return {
        name: 'state-dir',
        status: 'fail',
        message: `the state dir ${dir} is not writable (${code === 'EROFS' ? 'read-only file system' : 'permission denied'}): remount it read-write or give the gateway's user write access (chown/chmod), or pass --state-dir <a writable dir>`,
      };
    }
    if (code === 'ENOSPC') return diskFull(dir);
    return { name: 'state-dir', status: 'fail', message: `cannot write in the state dir ${dir}: ${(err as Error).message}` };
  }
}

function diskFull(dir: string): HealthCheck {
  return {
    name: 'disk-space',
    status: 'fail',
    message: `the file system of ${dir} is full: free space there (or grow it); the gateway refuses writes until then and recovers by itself`,
  };
}

export function diskSpaceCheck(dir: string): HealthCheck {
  if (!existsSync(dir)) return { name: 'disk-space', status: 'warn', message: `${dir} does not exist yet` };
  const s = statfsSync(dir);
  const free = s.bavail * s.bsize;
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (free < FULL_DISK_BYTES) return diskFull(dir);
  if (free < LOW_DISK_BYTES) {
    return { name: 'disk-space', status: 'warn', message: `only ${mib(free)} free on the file system of ${dir}: free space before writes start failing` };
  }
  return { name: 'disk-space', status: 'ok', message: `${mib(free)} free on the file system of ${dir}` };
}

/** The recovery step for a database SQLite cannot read. */
function corruptStep(file: string): string {
  return `stop the gateway, move ${file} (and ${file}-wal, ${file}-shm) aside, and restore your backup of it; without a backup, \`sqlite3 ${file} .recover | sqlite3 ${file}.recovered\` salvages what it can (docs/reliability.md §Database and disk faults)`;
}

/**
 * The database file is a SQLite database that passes `quick_check` (doctor), or, with `header`
 * (every `gateway run` start), one whose header and schema read back: a check that costs the same
 * for ten devices or a million (quick_check reads every page: seconds on a large store). A page
 * corrupted further in surfaces as a store fault when it is read, and `clawgate doctor` finds it.
 * Opened read-only.
 */
export function sqliteIntegrityCheck(file: string, depth: 'quick' | 'header' = 'quick'): HealthCheck {
  if (!existsSync(file)) return { name: 'store-integrity', status: 'warn', message: `no database at ${file} yet (created on first start)` };
  let db: Database.Database | null = null;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    if (depth === 'header') {
      db.prepare('SELECT count(*) FROM sqlite_master').get();
      return { name: 'store-integrity', status: 'ok', message: `${file} header and schema read` };
    }
    const rows = db.pragma('quick_check') as Array<{ quick_check: string }>;
    const problems = rows.map((r) => r.quick_check).filter((x) => x !== 'ok');
    if (problems.length > 0) {
      return { name: 'store-integrity', status: 'fail', message: `${file} is corrupt (${problems.slice(0, 3).join('; ')}): ${corruptStep(file)}` };
    }
    return { name: 'store-integrity', status: 'ok', message: `${file} passes quick_check` };
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
      return {
        name: 'store-integrity',
        status: 'fail',
        message: `${file} is not a readable SQLite database (${(err as Error).message}): ${corruptStep(file)}`,
      };
    }
    if (code.startsWith('SQLITE_BUSY')) return lockedBy(file);
    return { name: 'store-integrity', status: 'fail', message: `cannot read ${file}: ${(err as Error).message}` };
  } finally {
    db?.close();
  }
}

function lockedBy(file: string): HealthCheck {
  return {
    name: 'store-lock',
    status: 'warn',
    message: `another process holds the write lock on ${file}: the gateway answers writes with STORE_UNAVAILABLE (busy) until it lets go; find it with \`fuser ${file}\` and stop it (a running gateway holds the lock only for milliseconds)`,
  };
}

/** Is another process holding the database's write lock? Probed by asking for it without waiting. */
export function sqliteLockCheck(file: string): HealthCheck {
  if (!existsSync(file)) return { name: 'store-lock', status: 'ok', message: `no database at ${file} yet` };
  let db: Database.Database | null = null;
  try {
    // A short wait, so a running gateway's own write of a few milliseconds is not taken for a stuck lock.
    db = new Database(file, { fileMustExist: true, timeout: 250 });
    db.exec('BEGIN IMMEDIATE');
    db.exec('ROLLBACK');
    return { name: 'store-lock', status: 'ok', message: `${file} takes writes (no other process holds its write lock)` };
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return lockedBy(file);
    if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_CANTOPEN') {
      return {
        name: 'store-lock',
        status: 'fail',
        message: `${file} cannot be written (${(err as Error).message}): make it and its directory writable by the gateway's user`,
      };
    }
    // Corruption and the like are reported by store-integrity.
    return { name: 'store-lock', status: 'warn', message: `could not probe the write lock of ${file}: ${(err as Error).message}` };
  } finally {
    db?.close();
  }
}

/**
 * What `gateway run` checks before opening its state: the first failure, as a message naming the
 * path and the next step, or null when it may start. Lock contention is not a refusal (the lock
 * may be a moment's), and low space only a warning.
 */
export function startupRefusal(stateDir: string, sqlite: boolean): string | null {
  const dir = stateDirCheck(stateDir);
  if (dir.status === 'fail') return dir.message;
  if (!sqlite) return null;
  const integrity = sqliteIntegrityCheck(join(stateDir, SQLITE_FILE), 'header');
  if (integrity.status === 'fail') return integrity.message;
  return null;
}

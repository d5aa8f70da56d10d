/**
 * A read-only, in-memory snapshot of another program's SQLite database in WAL mode, taken
 * without touching its files at all.
 *
 * Why not just open it read-only: a WAL reader still writes its read mark into the `-shm` file,
 * and SQLite as built into better-sqlite3 takes no URI options (`immutable=1` would also skip the
 * WAL, where the latest commits live). So the main file and the WAL are read as bytes, the WAL's
 * committed frames (valid salts and checksums, up to the last commit frame, as SQLite's own
 * recovery does) are laid over the pages, and the result is opened as a serialized in-memory
 * database. Nothing is written anywhere; the secrets it holds stay in this process's memory.
 */
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';

const WAL_MAGIC_LE = 0x377f0682;
const WAL_MAGIC_BE = 0x377f0683;
const WAL_HEADER = 32;
const FRAME_HEADER = 24;

/** SQLite's WAL checksum: pairs of 32-bit words, in the byte order the magic chose. */
function walChecksum(buf: Buffer, start: number, end: number, bigEndian: boolean, s: [number, number]): [number, number] {
  let s0 = s[0];
  let s1 = s[1];
  for (let i = start; i < end; i += 8) {
    const x0 = bigEndian ? buf.readUInt32BE(i) : buf.readUInt32LE(i);
    const x1 = bigEndian ? buf.readUInt32BE(i + 4) : buf.readUInt32LE(i + 4);
    s0 = (s0 + x0 + s1) >>> 0;
    s1 = (s1 + x1 + s0) >>> 0;
  }
  return [s0, s1];
}

/** The database bytes with the WAL's committed frames applied (the WAL ignored when it is not valid, as SQLite would). */
export function snapshotBytes(dbPath: string): Buffer {
  let db: Buffer = readFileSync(dbPath);
  if (db.length < 100 || db.subarray(0, 16).toString('latin1') !== 'SQLite format 3\u0000') throw new Error(`${dbPath} is not a SQLite database`);
  const rawPage = db.readUInt16BE(16);
  const pageSize = rawPage === 1 ? 65536 : rawPage;
  const walPath = `${dbPath}-wal`;
  if (existsSync(walPath)) {
    const wal = readFileSync(walPath);
    db = applyWal(db, wal, pageSize);
  }
  // Serialized databases open in rollback mode: bytes 18/19 = 1 (legacy) instead of 2 (WAL).
  db[18] = 1;
  db[19] = 1;
  return db;
}

function applyWal(db: Buffer, wal: Buffer, pageSize: number): Buffer {
  if (wal.length < WAL_HEADER) return db;
  const magic = wal.readUInt32BE(0);
  if (magic !== WAL_MAGIC_LE && magic !== WAL_MAGIC_BE) return db;
  const bigEndian = magic === WAL_MAGIC_BE;
  if (wal.readUInt32BE(8) !== pageSize) return db;
  const salt1 = wal.readUInt32BE(16);
  const salt2 = wal.readUInt32BE(20);
  let sum = walChecksum(wal, 0, 24, bigEndian, [0, 0]);
  if (sum[0] !== wal.readUInt32BE(24) || sum[1] !== wal.readUInt32BE(28)) return db;
  const frameSize = FRAME_HEADER + pageSize;
  // Pages of committed transactions only: frames after the last commit frame are dropped.
  let pending = new Map<number, Buffer>();
  const committed = new Map<number, Buffer>();
  let dbPages = Math.floor(db.length / pageSize);
  for (let off = WAL_HEADER; off + frameSize <= wal.length; off += frameSize) {
    if (wal.readUInt32BE(off + 8) !== salt1 || wal.readUInt32BE(off + 12) !== salt2) break;
    sum = walChecksum(wal, off, off + 8, bigEndian, sum);
    sum = walChecksum(wal, off + FRAME_HEADER, off + frameSize, bigEndian, sum);
    if (sum[0] !== wal.readUInt32BE(off + 16) || sum[1] !== wal.readUInt32BE(off + 20)) break;
    const page = wal.readUInt32BE(off);
    pending.set(page, wal.subarray(off + FRAME_HEADER, off + frameSize));
    const commitSize = wal.readUInt32BE(off + 4);
    if (commitSize !== 0) {
      for (const [p, data] of pending) committed.set(p, data);
      pending = new Map();
      dbPages = commitSize;
    }
  }
  if (committed.size === 0) return db;
  const out = Buffer.alloc(dbPages * pageSize);
  db.copy(out, 0, 0, Math.min(db.length, out.length));
  for (const [p, data] of committed) if (p >= 1 && p <= dbPages) data.copy(out, (p - 1) * pageSize);
  return out;
}

/** Open the snapshot (read-only, in memory). */
export function openSnapshot(dbPath: string): Database.Database {
  return new Database(snapshotBytes(dbPath), { readonly: true });
}

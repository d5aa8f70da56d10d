/**
 * `seedPairedDevices` for the SQL stores: many NEW, already approved devices (grants and token
 * hashes with them) per call, for stores of a million devices. One transaction and one audit
 * entry per batch; multi-row statements instead of one statement per row. It never merges (that
 * is `importDevices`): a batch naming a device id the store holds, or one id twice, is refused
 * whole (`exists`, with every offending id) and nothing is written.
 */
import type Database from 'better-sqlite3';
import type { SeedDevice, SeedDevicesResult } from '../core/store.js';
import { seedBatchProblem } from './device-page.js';

/** Ids of the batch the store already holds or the batch repeats, each once, in batch order. */
export function offendingIds(devices: readonly SeedDevice[], held: ReadonlySet<string>): string[] {
  const seen = new Set<string>();
  const out = new Set<string>();
  for (const d of devices) {
    if (held.has(d.deviceId) || seen.has(d.deviceId)) out.add(d.deviceId);
    seen.add(d.deviceId);
  }
  return [...out];
}

/** The refusal a batch earns before any write, or null when it may be written. */
export function seedRefusal(devices: readonly SeedDevice[], held: ReadonlySet<string>): SeedDevicesResult | null {
  const problem = seedBatchProblem(devices);
  if (problem) return { ok: false, reason: problem };
  const bad = offendingIds(devices, held);
  return bad.length > 0 ? { ok: false, reason: 'exists', deviceIds: bad } : null;
}

/** Rows of a batch, in the columns both schemas share. */
export function seedRows(devices: readonly SeedDevice[]) {
  const devicesRows: unknown[][] = [];
  const grants: unknown[][] = [];
  const tokens: unknown[][] = [];
  for (const d of devices) {
    devicesRows.push([d.deviceId, d.publicKey, JSON.stringify(d.meta), d.label ?? null, d.createdAtMs]);
    for (const g of d.grants) grants.push([d.deviceId, g.role, JSON.stringify(g.scopes), 1, g.approvedAtMs, g.approvedVia]);
    for (const t of d.tokens) tokens.push([t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null]);
  }
  return { devicesRows, grants, tokens };
}

export const SEED_DEVICE_COLUMNS = 'devices (device_id, public_key, meta_json, label, created_at_ms)';
export const SEED_GRANT_COLUMNS = 'grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via)';
export const SEED_TOKEN_COLUMNS = 'tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms)';

/**
 * Rows per multi-row INSERT on SQLite: 200 rows of at most 7 columns stay far below its default
 * limit of 32,766 bound parameters, and larger statements stopped paying off.
 */
export const SQLITE_ROWS_PER_STATEMENT = 200;

/**
 * Insert `rows` with statements of SQLITE_ROWS_PER_STATEMENT rows, the remainder in one shorter
 * statement. `cached` keeps the full-size statement compiled across batches; the remainder's size
 * rarely repeats, so it is compiled with `db.prepare` and not kept.
 */
export function insertRowsSqlite(
  db: Database.Database,
  cached: (sql: string) => Database.Statement,
  tableAndColumns: string,
  width: number,
  rows: readonly unknown[][],
): void {
  const tuple = `(${Array(width).fill('?').join(',')})`;
  const sqlFor = (count: number) => `INSERT INTO ${tableAndColumns} VALUES ${Array(count).fill(tuple).join(',')}`;
  let i = 0;
  if (rows.length >= SQLITE_ROWS_PER_STATEMENT) {
    const full = cached(sqlFor(SQLITE_ROWS_PER_STATEMENT));
    const params: unknown[] = new Array(SQLITE_ROWS_PER_STATEMENT * width);
    for (; i + SQLITE_ROWS_PER_STATEMENT <= rows.length; i += SQLITE_ROWS_PER_STATEMENT) {
      for (let r = 0; r < SQLITE_ROWS_PER_STATEMENT; r++) {
        const row = rows[i + r] as unknown[];
        for (let c = 0; c < width; c++) params[r * width + c] = row[c];
      }
      full.run(params);
    }
  }
  if (i < rows.length) db.prepare(sqlFor(rows.length - i)).run(rows.slice(i).flat());
}

/** Column-wise arrays of rows, for `INSERT … SELECT * FROM unnest(…)` on PostgreSQL. */
export function columnsOf(rows: readonly unknown[][], width: number): unknown[][] {
  const cols: unknown[][] = Array.from({ length: width }, () => []);
  for (const r of rows) for (let c = 0; c < width; c++) (cols[c] as unknown[]).push(r[c]);
  return cols;
}

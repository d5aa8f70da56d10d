/**
 * Inserting many NEW paired devices at once (grants and token hashes with them), for stores of a
 * million devices: one transaction per batch, multi-row statements instead of one round trip per
 * row, and ONE audit entry per batch (`devices.imported-bulk`, with the count and the first and
 * last device id) instead of one per device. Unlike `importDevices` it never merges: a batch
 * naming a device id the store already holds is refused whole (`exists`) and nothing is written.
 * Node surfaces are not carried (a bulk-imported node re-requests its surface on first connect).
 */
import type Database from 'better-sqlite3';
import type { AuditInput, ImportedDevice } from './types.js';

export interface BulkDevicesInput {
  /** Where the devices came from, kept in the batch's audit entry. */
  source: string;
  devices: ImportedDevice[];
  atMs: number;
  actor: string;
}

export type BulkDevicesResult = { ok: true; inserted: number } | { ok: false; reason: 'exists'; deviceIds: string[] };

/** The batch's one audit entry. */
export function bulkAudit(input: BulkDevicesInput): AuditInput {
  const ids = input.devices.map((d) => d.deviceId);
  return {
    atMs: input.atMs,
    actor: input.actor,
    action: 'devices.imported-bulk',
    subject: ids[0],
    data: { source: input.source, count: ids.length, firstDeviceId: ids[0], lastDeviceId: ids[ids.length - 1] },
  };
}

/** Flat rows of a batch, in the columns both schemas share. */
function rowsOf(devices: ImportedDevice[]) {
  const devicesRows: unknown[][] = [];
  const grants: unknown[][] = [];
  const tokens: unknown[][] = [];
  for (const d of devices) {
    devicesRows.push([d.deviceId, d.publicKey, JSON.stringify(d.meta), d.label ?? null, d.createdAtMs, d.lastSeenAtMs ?? null]);
    for (const g of d.grants) grants.push([d.deviceId, g.role, JSON.stringify(g.scopes), 1, g.approvedAtMs, g.approvedVia]);
    for (const t of d.tokens) tokens.push([t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null]);
  }
  return { devicesRows, grants, tokens };
}

/** Device ids of the batch the store already holds (or repeated inside the batch). */
function duplicates(devices: ImportedDevice[], held: Set<string>): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const d of devices) {
    if (held.has(d.deviceId) || seen.has(d.deviceId)) out.push(d.deviceId);
    seen.add(d.deviceId);
  }
  return out;
}

/** Rows per multi-row INSERT on SQLite (its default limit is 32,766 bound parameters). */
const SQLITE_ROWS_PER_STATEMENT = 200;

/** Insert `rows` into `table (columns)` with multi-row statements (one bind-and-step per 200 rows). */
function insertRows(db: Database.Database, tableAndColumns: string, width: number, rows: unknown[][]): void {
  const tuple = `(${Array(width).fill('?').join(',')})`;
  const full = db.prepare(`INSERT INTO ${tableAndColumns} VALUES ${Array(SQLITE_ROWS_PER_STATEMENT).fill(tuple).join(',')}`);
  let i = 0;
  for (; i + SQLITE_ROWS_PER_STATEMENT <= rows.length; i += SQLITE_ROWS_PER_STATEMENT) full.run(rows.slice(i, i + SQLITE_ROWS_PER_STATEMENT).flat());
  if (i < rows.length) {
    const rest = rows.slice(i);
    db.prepare(`INSERT INTO ${tableAndColumns} VALUES ${Array(rest.length).fill(tuple).join(',')}`).run(rest.flat());
  }
}

/** SQLite: call inside the store's write transaction; the caller appends `bulkAudit` in the same one. */
export function bulkInsertSqlite(db: Database.Database, input: BulkDevicesInput): BulkDevicesResult {
  const ids = input.devices.map((d) => d.deviceId);
  const held = new Set(
    (
      db.prepare('SELECT device_id FROM devices WHERE device_id IN (SELECT value FROM json_each(?))').all(JSON.stringify(ids)) as Array<{ device_id: string }>
    ).map((r) => r.device_id),
  );
  const dup = duplicates(input.devices, held);
  if (dup.length > 0) return { ok: false, reason: 'exists', deviceIds: dup };
  const { devicesRows, grants, tokens } = rowsOf(input.devices);
  insertRows(db, 'devices (device_id, public_key, meta_json, label, created_at_ms, last_seen_at_ms)', 6, devicesRows);
  insertRows(db, 'grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via)', 6, grants);
  insertRows(db, 'tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms)', 7, tokens);
  return { ok: true, inserted: devicesRows.length };
}

/** The part of a PostgreSQL transaction this needs (`PgQuery`). */
interface PgTx {
  all<T>(sql: string, params?: unknown[]): Promise<T[]>;
  run(sql: string, params?: unknown[]): Promise<number>;
}

/** Column-wise arrays of rows, for `INSERT … SELECT * FROM unnest(…)`: one statement per table and batch. */
function columns(rows: unknown[][], width: number): unknown[][] {
  const cols: unknown[][] = Array.from({ length: width }, () => []);
  for (const r of rows) for (let i = 0; i < width; i++) (cols[i] as unknown[]).push(r[i]);
  return cols;
}

/** PostgreSQL: call inside the store's serialized write transaction; the caller appends `bulkAudit` in the same one. */
export async function bulkInsertPostgres(tx: PgTx, input: BulkDevicesInput): Promise<BulkDevicesResult> {
  const ids = input.devices.map((d) => d.deviceId);
  const held = new Set((await tx.all<{ device_id: string }>('SELECT device_id FROM devices WHERE device_id = ANY($1::text[])', [ids])).map((r) => r.device_id));
  const dup = duplicates(input.devices, held);
  if (dup.length > 0) return { ok: false, reason: 'exists', deviceIds: dup };
  const { devicesRows, grants, tokens } = rowsOf(input.devices);
  await tx.run(
    'INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms, last_seen_at_ms) ' +
      'SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])',
    columns(devicesRows, 6),
  );
  if (grants.length > 0) {
    await tx.run(
      'INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) ' +
        'SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[])',
      columns(grants, 6),
    );
  }
  if (tokens.length > 0) {
    await tx.run(
      'INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) ' +
        'SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::bigint[], $7::bigint[])',
      columns(tokens, 7),
    );
  }
  return { ok: true, inserted: devicesRows.length };
}

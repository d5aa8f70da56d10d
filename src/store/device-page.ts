/**
 * Dialect-neutral parts of device paging: the opaque cursor, query checks and prefix bounds.
 * The cursor is the (creation time, device id) of the last device of a page, base64url-encoded
 * JSON: opaque to clients, checked strictly when it comes back.
 */
import { DEVICE_PAGE_MAX, type DevicePageQuery, type DeviceRecord, SEED_BATCH_MAX, type SeedDevice } from '../core/store.js';

export interface PagePosition {
  createdAtMs: number;
  deviceId: string;
}

export function encodeDeviceCursor(d: Pick<DeviceRecord, 'createdAtMs' | 'deviceId'>): string {
  return Buffer.from(JSON.stringify([d.createdAtMs, d.deviceId])).toString('base64url');
}

/** The position a cursor names, or null when it is not one this store issued. */
export function decodeDeviceCursor(cursor: string): PagePosition | null {
  if (cursor.length === 0 || cursor.length > 512 || !/^[A-Za-z0-9_-]+$/.test(cursor)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(v) || v.length !== 2) return null;
    const [createdAtMs, deviceId] = v as [unknown, unknown];
    if (typeof createdAtMs !== 'number' || !Number.isSafeInteger(createdAtMs) || createdAtMs < 0) return null;
    if (typeof deviceId !== 'string' || deviceId.length === 0 || deviceId.length > 128) return null;
    return { createdAtMs, deviceId };
  } catch {
    return null;
  }
}

/** ASCII letters only, as SQLite's lower() and PostgreSQL's lower() under COLLATE "C" do. */
export const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** `typed`: the search as given; `folded`: its ASCII letters lowercased (names match folded, ids either way). */
export type CheckedPageQuery =
  | { ok: true; limit: number; after: PagePosition | null; search: { typed: string; folded: string } | null }
  | { ok: false; reason: 'bad-limit' | 'bad-cursor' };

export function checkDevicePageQuery(q: DevicePageQuery): CheckedPageQuery {
  if (!Number.isSafeInteger(q.limit) || q.limit < 1 || q.limit > DEVICE_PAGE_MAX) return { ok: false, reason: 'bad-limit' };
  let after: PagePosition | null = null;
  if (q.cursor !== undefined) {
    after = decodeDeviceCursor(q.cursor);
    if (!after) return { ok: false, reason: 'bad-cursor' };
  }
  const search = q.search ? { typed: q.search, folded: asciiLower(q.search) } : null;
  return { ok: true, limit: q.limit, after, search };
}

/**
 * The least string greater than every string starting with `prefix`, in code-point (UTF-8 byte)
 * order: `x >= prefix AND x < upper` is a prefix match an index can serve.
 */
export function prefixUpperBound(prefix: string): string {
  return `${prefix}\u{10FFFF}`;
}

/** Rows were fetched with limit + 1: trim to the page and name the cursor of the next one. */
export function pageOf(rows: DeviceRecord[], limit: number): { ok: true; devices: DeviceRecord[]; nextCursor: string | null } {
  const more = rows.length > limit;
  const devices = more ? rows.slice(0, limit) : rows;
  const last = devices[devices.length - 1];
  return { ok: true, devices, nextCursor: more && last ? encodeDeviceCursor(last) : null };
}

/** Why a seed batch is refused before touching the database (null = acceptable). */
export function seedBatchProblem(devices: readonly SeedDevice[]): 'bad-batch' | null {
  if (devices.length === 0 || devices.length > SEED_BATCH_MAX) return 'bad-batch';
  return null;
}

/** The page search of the stores, for one device in hand (same rule as their SQL). */
export function deviceMatchesSearch(d: Pick<DeviceRecord, 'deviceId' | 'label' | 'displayName'>, search: string | undefined): boolean {
  if (!search) return true;
  const folded = asciiLower(search);
  const named = (n: string | undefined) => n !== undefined && asciiLower(n).startsWith(folded);
  return d.deviceId.startsWith(search) || d.deviceId.startsWith(folded) || named(d.label) || named(d.displayName);
}

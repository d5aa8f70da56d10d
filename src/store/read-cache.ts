/**
 * An in-process cache of the two store reads every device-token connect makes (the token by its
 * id, the device's grants), for a store this process writes through alone (SQLite).
 *
 * Why it stays exact: every call on the store object that is not a known read counts as a write
 * and empties the cache both before it runs and after it settles (a revocation, rotation,
 * removal or approval is visible to the very next connect, as without the cache); a read that
 * overlapped a write is not kept; and before each cached answer the store's `dataVersion()` is
 * compared with the one the cache was filled under, so a commit by ANOTHER connection to the same
 * database (another process on the state dir) empties it too. Only found records are cached: an
 * unknown token id always goes to the store. Callers get copies, so nothing they change leaks
 * into the cache.
 *
 * Not used for PostgreSQL: there other instances write, and their changes reach this process only
 * through the asynchronous cluster bus, so a revoked token could still be accepted here for the
 * time the notification takes (and indefinitely while the bus is reconnecting).
 */
import type { Role } from '@clawgate/protocol/frames';
import type { GrantRecord, Store, TokenRecord } from '../core/store.js';

/** Store methods that only read: calling them leaves the cache as it is. */
const READ_PREFIXES = ['get', 'list'];
const READS = new Set(['pendingDeliveryCount', 'dueDeliveries', 'nextDeliveryDueAtMs', 'schemaVersion', 'dataVersion', 'onAuditAppended']);

export interface ReadCacheStats {
  hits: number;
  misses: number;
  clears: number;
}

export interface ReadCacheOptions {
  /** Most entries per kind (tokens, grant lists); the oldest is dropped beyond it. */
  maxEntries?: number;
}

/** What a cacheable store may offer: a number that changes when another connection commits. */
interface Versioned {
  dataVersion?(): number;
}

/** How stale the check for commits by other processes may be. */
export const VERSION_READ_INTERVAL_MS = 1;

const copyToken = (t: TokenRecord): TokenRecord => ({ ...t });
const copyGrant = (g: GrantRecord): GrantRecord => ({ ...g, scopes: [...g.scopes] });

class ReadCache {
  readonly tokens = new Map<string, TokenRecord>();
  readonly grants = new Map<string, GrantRecord[]>();
  /** Grows on every write (start and end): a read that saw it change is not kept. */
  generation = 0;
  version: number | null = null;
  /** When the version was last read (performance.now(), ms). */
  private versionReadAt = Number.NEGATIVE_INFINITY;
  readonly stats: ReadCacheStats = { hits: 0, misses: 0, clears: 0 };

  constructor(
    private readonly store: Store & Versioned,
    private readonly maxEntries: number,
  ) {}

  clear(): void {
    this.generation++;
    if (this.tokens.size > 0 || this.grants.size > 0) this.stats.clears++;
    this.tokens.clear();
    this.grants.clear();
  }

  /**
   * Empty the cache if another connection committed since it was filled. Read at most once per
   * VERSION_READ_INTERVAL_MS (the pragma costs as much as a point read, and a busy gateway
   * admits a connect every few hundred microseconds): a commit by another process is seen at
   * most that much later, as if it had landed a moment later. This process's own writes empty
   * the cache at once, whatever the interval.
   */
  checkVersion(): void {
    const now = performance.now();
    if (now - this.versionReadAt < VERSION_READ_INTERVAL_MS) return;
    this.versionReadAt = now;
    const v = this.store.dataVersion?.() ?? null;
    if (v !== this.version) {
      this.clear();
      this.version = v;
    }
  }

  put<V>(map: Map<string, V>, key: string, value: V, generation: number): void {
    if (generation !== this.generation) return;
    if (map.size >= this.maxEntries) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
    map.set(key, value);
  }

  async getToken(tokenId: string): Promise<TokenRecord | null> {
    this.checkVersion();
    const hit = this.tokens.get(tokenId);
    if (hit) {
      this.stats.hits++;
      return copyToken(hit);
    }
    this.stats.misses++;
    const gen = this.generation;
    const rec = await this.store.getToken(tokenId);
    if (rec) this.put(this.tokens, tokenId, copyToken(rec), gen);
    return rec;
  }

  async listGrants(deviceId?: string): Promise<GrantRecord[]> {
    if (deviceId === undefined) return this.store.listGrants();
    this.checkVersion();
    const hit = this.grants.get(deviceId);
    if (hit) {
      this.stats.hits++;
      return hit.map(copyGrant);
    }
    this.stats.misses++;
    const gen = this.generation;
    const list = await this.store.listGrants(deviceId);
    this.put(this.grants, deviceId, list.map(copyGrant), gen);
    return list;
  }

  async getGrant(deviceId: string, role: Role): Promise<GrantRecord | null> {
    const g = (await this.listGrants(deviceId)).find((x) => x.role === role);
    return g ?? null;
  }
}

/** The cache's counters, for a store wrapped by `withReadCache` (null for any other store). */
const statsOf = new WeakMap<object, ReadCacheStats>();
export function readCacheStats(store: Store): ReadCacheStats | null {
  return statsOf.get(store) ?? null;
}

/** `store` with its token and grant reads cached (see the module comment for when that is exact). */
export function withReadCache<S extends Store>(store: S & Versioned, opts: ReadCacheOptions = {}): S {
  const cache = new ReadCache(store, opts.maxEntries ?? 50_000);
  const wrapped = new Map<PropertyKey, unknown>();
  const cached: Record<string, unknown> = {
    getToken: cache.getToken.bind(cache),
    listGrants: cache.listGrants.bind(cache),
    getGrant: cache.getGrant.bind(cache),
  };
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && prop in cached) return cached[prop];
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      let fn = wrapped.get(prop) as ((...args: unknown[]) => unknown) | undefined;
      if (fn) return fn;
      const name = String(prop);
      const isRead = READS.has(name) || READ_PREFIXES.some((p) => name.startsWith(p));
      fn = isRead
        ? (...args: unknown[]) => (value as (...a: unknown[]) => unknown).apply(target, args)
        : (...args: unknown[]) => {
            // A write (or anything not known to be a read): nothing cached before it may answer
            // after it, and nothing read while it runs is kept.
            cache.clear();
            let out: unknown;
            try {
              out = (value as (...a: unknown[]) => unknown).apply(target, args);
            } catch (err) {
              cache.clear();
              throw err;
            }
            if (out instanceof Promise) {
              return out.finally(() => cache.clear());
            }
            cache.clear();
            return out;
          };
      wrapped.set(prop, fn);
      return fn;
    },
  });
  statsOf.set(proxy, cache.stats);
  return proxy;
}

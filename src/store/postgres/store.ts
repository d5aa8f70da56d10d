/**
 * PostgreSQL store (node-postgres): several gateway instances share one database. Writes are
 * serialized by a transaction-scoped advisory lock, so each domain action (with its audit
 * entry) behaves as it does on SQLite; each domain lives in its own file next to this one.
 */
import type pg from 'pg';
import { DomainMethods, type StoreDomains } from '../compose.js';
import type { Store } from '../types.js';
import { postgresAudit } from './audit.js';
import { postgresAutomations } from './automations.js';
import { PgDb, type PgQuery, type PostgresStoreOptions } from './db.js';
import { postgresDeviceSeed } from './device-seed.js';
import { postgresDevices } from './devices.js';
import { postgresImport } from './import.js';
import { postgresMeta } from './meta.js';
import { postgresNodeSurfaces } from './node-surfaces.js';
import { postgresRetention } from './retention.js';
import { postgresSetupCodes } from './setup-codes.js';

export {
  DELIVERY_LEASE_MS,
  PG_CONNECT_TIMEOUT_MS,
  PG_LOCK,
  PG_QUERY_TIMEOUT_MS,
  PgQuery,
  POSTGRES_MIGRATIONS,
  type PostgresStoreOptions,
} from './db.js';

export class PostgresStore extends DomainMethods implements Store {
  readonly kind = 'postgres' as const;

  private constructor(private readonly core: PgDb) {
    super();
    const domains: StoreDomains = {
      ...postgresMeta(core),
      ...postgresDevices(core),
      ...postgresDeviceSeed(core),
      ...postgresSetupCodes(core),
      ...postgresNodeSurfaces(core),
      ...postgresAutomations(core),
      ...postgresImport(core),
      ...postgresAudit(core),
      ...postgresRetention(core),
    };
    Object.assign(this, domains);
  }

  /** Connect and bring the schema up to date (safe when several instances start at once). */
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
    return new PostgresStore(await PgDb.open(url, opts));
  }

  get url(): string {
    return this.core.url;
  }

  /** The connection pool (the cluster bus and the failure limiter share it). */
  get pool(): pg.Pool {
    return this.core.pool;
  }

  schemaVersion(): Promise<number> {
    return this.core.schemaVersion();
  }

  close(): Promise<void> {
    return this.core.close();
  }

  /** One write transaction, serialized with every other writer of this database. */
  write<T>(fn: (tx: PgQuery) => Promise<T>): Promise<T> {
    return this.core.write(fn);
  }

  onAuditAppended(listener: () => void): void {
    this.core.onAuditAppended(listener);
  }
}

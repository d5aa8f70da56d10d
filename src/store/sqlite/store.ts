/**
 * SQLite store (better-sqlite3, WAL). The embedded default: one file in the state dir, or
 * `:memory:` for a throwaway store. Every domain action runs in one IMMEDIATE transaction
 * together with its audit entry; each domain lives in its own file next to this one.
 */
import { DomainMethods, type StoreDomains } from '../compose.js';
import type { Store } from '../types.js';
import { sqliteAudit } from './audit.js';
import { sqliteAutomations } from './automations.js';
import { SqliteDb } from './db.js';
import { sqliteDeviceSeed } from './device-seed.js';
import { sqliteDevices } from './devices.js';
import { sqliteImport } from './import.js';
import { sqliteMeta } from './meta.js';
import { sqliteNodeSurfaces } from './node-surfaces.js';
import { sqliteRetention } from './retention.js';
import { sqliteSetupCodes } from './setup-codes.js';

export { SQLITE_MIGRATIONS } from './db.js';

export class SqliteStore extends DomainMethods implements Store {
  readonly kind = 'sqlite' as const;
  private readonly core: SqliteDb;

  constructor(path: string) {
    super();
    this.core = new SqliteDb(path);
    const core = this.core;
    const domains: StoreDomains = {
      ...sqliteMeta(core),
      ...sqliteDevices(core),
      ...sqliteDeviceSeed(core),
      ...sqliteSetupCodes(core),
      ...sqliteNodeSurfaces(core),
      ...sqliteAutomations(core),
      ...sqliteImport(core),
      ...sqliteAudit(core),
      ...sqliteRetention(core),
    };
    Object.assign(this, domains);
  }

  /** Changes whenever ANOTHER connection commits to this database (the read cache's staleness check). */
  dataVersion(): number {
    return this.core.dataVersion();
  }

  get schemaVersion(): number {
    return this.core.schemaVersion;
  }

  close(): Promise<void> {
    return this.core.close();
  }

  onAuditAppended(listener: () => void): void {
    this.core.onAuditAppended(listener);
  }
}

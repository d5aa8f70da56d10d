/**
 * Store selection for `clawgate gateway run` (SQLite by default, PostgreSQL for several
 * instances) and `clawgate migrate --to postgres`, which copies a SQLite state dir into an
 * empty PostgreSQL database in one transaction.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { ClusterBus } from '../core/cluster.js';
import type { Clock, Random } from '../core/env.js';
import type { Logger } from '../core/logger.js';
import type { AuthLimiter, RateLimitPolicy } from '../core/ratelimit.js';
import type { AuditEntry, Store } from '../core/store.js';
import { withReadCache } from '../store/read-cache.js';
import { verifyAuditChain } from '../store/shared.js';
import { SQLITE_MIGRATIONS, SqliteStore } from '../store/sqlite/store.js';
import { resolveStateDir } from './state.js';
import { parse, UsageError } from './usage.js';

export type StoreKind = 'sqlite' | 'postgres';

export interface OpenedStore {
  store: Store;
  bus?: ClusterBus | undefined;
  limiter?: AuthLimiter | undefined;
  /** For the startup banner: where the state lives (no password). */
  where: string;
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs and banners. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable url)';
  }
}

export function resolveStoreChoice(
  flagStore: string | undefined,
  flagUrl: string | undefined,
  file: { store?: string | undefined; postgres?: { url?: string | undefined } | undefined },
  env: NodeJS.ProcessEnv = process.env,
): { kind: StoreKind; url?: string | undefined } {
  const kind = flagStore ?? file.store ?? 'sqlite';
  if (kind !== 'sqlite' && kind !== 'postgres') throw new UsageError(`--store must be sqlite or postgres, got ${kind}`);
  if (kind === 'sqlite') return { kind };
  const url = flagUrl ?? env.CLAWGATE_POSTGRES_URL ?? file.postgres?.url;
  if (!url) throw new UsageError('--store postgres needs --postgres-url <url> (or CLAWGATE_POSTGRES_URL, or gateway.postgres.url in the config file)');
  if (!/^postgres(ql)?:\/\//.test(url)) throw new UsageError(`--postgres-url must be a postgres:// URL, got ${redactUrl(url)}`);
  return { kind, url };
}

export async function openConfiguredStore(
  choice: { kind: StoreKind; url?: string | undefined },
  stateDir: string,
  deps: { clock: Clock; random: Random; log: Logger; rateLimit: RateLimitPolicy },
): Promise<OpenedStore> {
  if (choice.kind === 'sqlite') {
    const file = join(stateDir, 'clawgate.sqlite');
    // This process writes the file alone (other processes' commits are caught by data_version):
    // the connect path's token and grant reads are served from memory.
    return { store: withReadCache(new SqliteStore(file)), where: file };
  }
  const url = choice.url as string;
  // `pg` and the PostgreSQL adapters load only when chosen: the SQLite default starts ~35 ms faster.
  const [{ PostgresStore }, { PgClusterBus }, { PgFailureLimiter }] = await Promise.all([
    import('../store/postgres/store.js'),
    import('../store/postgres/bus.js'),
    import('../store/postgres/limiter.js'),
  ]);
  // The cluster bus's LISTEN connection needs no schema: it opens while the store connects and
  // checks the schema (two server backends starting at once, not one after the other).
  const listening = PgClusterBus.listening(url, deps.random.uuid(), deps.log);
  let store: Awaited<ReturnType<typeof PostgresStore.open>>;
  try {
    store = await PostgresStore.open(url);
  } catch (err) {
    await listening.then(
      (bus) => bus.close(),
      () => {},
    );
    throw err;
  }
  try {
    const bus = await listening;
    await bus.attach(store.pool);
    return { store, bus, limiter: new PgFailureLimiter(store, deps.clock, deps.rateLimit), where: redactUrl(url) };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/** Tables copied first, parents before children (foreign keys); any other table follows. */
const COPY_ORDER = [
  'meta',
  'devices',
  'grants',
  'tokens',
  'pairing_requests',
  'audit',
  'setup_codes',
  'node_surfaces',
  'node_surface_requests',
  'chat_sessions',
  'chat_messages',
  'channels',
  'deliveries',
  'cron_jobs',
  'cron_runs',
];

export interface MigrateSummary {
  from: string;
  to: string;
  tables: Record<string, number>;
  auditEntries: number;
}

/** Rows per INSERT of `migrate` (bounded again by PostgreSQL's 65,535 parameters per statement). */
export const MIGRATE_BATCH_ROWS = 500;
/** Audit entries read back per page when the copied chain is verified. */
const AUDIT_VERIFY_PAGE = 1000;

/**
 * Copy every table of a SQLite state database into an empty PostgreSQL database, in one
 * transaction. Rows stream from SQLite and go out in multi-row INSERTs of `batchRows`, so memory
 * holds one batch, not a table: a million devices copy as they would ten.
 */
export interface MigrateProgress {
  table: string;
  copiedRows: number;
  totalRows: number;
}

/** Rows between two progress reports of one table (every table also reports when it is done). */
export const MIGRATE_PROGRESS_ROWS = 100_000;

export async function copySqliteToPostgres(
  sqliteFile: string,
  url: string,
  opts: { batchRows?: number; progressEveryRows?: number; onProgress?: (p: MigrateProgress) => void } = {},
): Promise<MigrateSummary> {
  const progressEvery = opts.progressEveryRows ?? MIGRATE_PROGRESS_ROWS;
  // Opening through SqliteStore brings an older state dir up to the current schema first.
  await new SqliteStore(sqliteFile).close();
  const src = new Database(sqliteFile, { readonly: true });
  const { PostgresStore } = await import('../store/postgres/store.js');
  const dst = await PostgresStore.open(url);
  try {
    const version = src.pragma('user_version', { simple: true }) as number;
    if (version !== SQLITE_MIGRATIONS.length) throw new Error(`SQLite state is at schema ${version}, expected ${SQLITE_MIGRATIONS.length}`);
    const tables = (src.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as Array<{ name: string }>)
      .map((r) => r.name)
      .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const pgTables = new Set(
      (await dst.pool.query('SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()')).rows.map((r) => r.table_name as string),
    );
    const missing = tables.filter((t) => !pgTables.has(t));
    if (missing.length > 0) throw new Error(`the PostgreSQL schema has no table for ${missing.join(', ')}: upgrade clawgate`);
    const counts: Record<string, number> = {};
    await dst.write(async (tx) => {
      for (const t of tables) {
        const n = await tx.one<{ n: number }>(`SELECT COUNT(*)::int AS n FROM ${t}`);
        if ((n?.n ?? 0) > 0) throw new UsageError(`the PostgreSQL database is not empty (table ${t} has rows); migrate into a fresh database`);
      }
      for (const t of tables) {
        const cols = (src.prepare(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).all(t) as Array<{ name: string }>).map((c) => c.name);
        const rowsPerInsert = Math.max(1, Math.min(opts.batchRows ?? MIGRATE_BATCH_ROWS, Math.floor(65_535 / cols.length)));
        const insert = async (rows: Array<Record<string, unknown>>) => {
          const values = rows.map((_, r) => `(${cols.map((_, c) => `$${r * cols.length + c + 1}`).join(',')})`).join(',');
          await tx.run(
            `INSERT INTO ${t} (${cols.join(',')}) VALUES ${values}`,
            rows.flatMap((row) => cols.map((c) => row[c])),
          );
        };
        const totalRows = (src.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
        let batch: Array<Record<string, unknown>> = [];
        let copied = 0;
        let reportAt = progressEvery;
        for (const row of src.prepare(`SELECT * FROM ${t} ORDER BY rowid`).iterate() as IterableIterator<Record<string, unknown>>) {
          batch.push(row);
          if (batch.length === rowsPerInsert) {
            await insert(batch);
            copied += batch.length;
            batch = [];
            if (copied >= reportAt && copied < totalRows) {
              opts.onProgress?.({ table: t, copiedRows: copied, totalRows });
              reportAt = (Math.floor(copied / progressEvery) + 1) * progressEvery;
            }
          }
        }
        if (batch.length > 0) await insert(batch);
        counts[t] = copied + batch.length;
        opts.onProgress?.({ table: t, copiedRows: counts[t], totalRows });
      }
    });
    // Verified a page at a time, each page continuing the chain of the one before.
    let auditEntries = 0;
    let last: AuditEntry | undefined;
    for (;;) {
      const page = await dst.listAudit({ afterSeq: last?.seq ?? 0, limit: AUDIT_VERIFY_PAGE });
      const broken = verifyAuditChain(page, last);
      if (broken !== null) throw new Error(`the copied audit log does not verify at seq ${broken}`);
      auditEntries += page.length;
      if (page.length < AUDIT_VERIFY_PAGE) break;
      last = page[page.length - 1];
    }
    return { from: sqliteFile, to: redactUrl(url), tables: counts, auditEntries };
  } finally {
    src.close();
    await dst.close();
  }
}

function rank(table: string): number {
  const i = COPY_ORDER.indexOf(table);
  return i === -1 ? COPY_ORDER.length : i;
}

export async function migrateCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    to: { type: 'string' },
    'postgres-url': { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.to !== 'postgres') throw new UsageError('usage: clawgate migrate --to postgres --postgres-url <url> [--state-dir <dir>] [--json]');
  const choice = resolveStoreChoice('postgres', values['postgres-url'] as string | undefined, {});
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  const file = join(stateDir, 'clawgate.sqlite');
  if (!existsSync(file)) {
    process.stderr.write(`no SQLite state at ${file}: nothing to migrate\n`);
    return 1;
  }
  // Progress on stderr, so --json output stays one document on stdout.
  const summary = await copySqliteToPostgres(file, choice.url as string, {
    onProgress: (p) => process.stderr.write(`migrate: ${p.table}: ${p.copiedRows.toLocaleString('en')} of ${p.totalRows.toLocaleString('en')} rows\n`),
  });
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else {
    process.stdout.write(`copied ${file} into ${summary.to}\n`);
    for (const [t, n] of Object.entries(summary.tables)) process.stdout.write(`  ${t}: ${n} rows\n`);
    process.stdout.write(`audit chain verified (${summary.auditEntries} entries)\n`);
    process.stdout.write(`start the gateway with: clawgate gateway run --store postgres --postgres-url <url>\n`);
  }
  return 0;
}

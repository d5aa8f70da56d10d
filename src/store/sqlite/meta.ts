/** SQLite store, domain: the gateway's own key/value settings. */
import type { MetaStore } from '../types.js';
import type { SqliteDb } from './db.js';

export function sqliteMeta(core: SqliteDb): MetaStore {
  return {
    async getMeta(key: string) {
      const r = core.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
      return r?.value ?? null;
    },
    async setMeta(key: string, value: string) {
      core.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
    },
    async setMetaIf(key: string, expected: string | null, value: string) {
      const res =
        expected === null
          ? core.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING').run(key, value)
          : core.stmt('UPDATE meta SET value = ? WHERE key = ? AND value = ?').run(value, key, expected);
      return res.changes === 1;
    },
  };
}

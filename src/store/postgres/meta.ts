/** PostgreSQL store, domain: the gateway's own key/value settings. */
import type { MetaStore } from '../types.js';
import type { PgDb } from './db.js';

export function postgresMeta(core: PgDb): MetaStore {
  return {
    async getMeta(key: string) {
      return (await core.q.one<{ value: string }>('SELECT value FROM meta WHERE key = $1', [key]))?.value ?? null;
    },
    async setMeta(key: string, value: string) {
      await core.q.run('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
    },
    async setMetaIf(key: string, expected: string | null, value: string) {
      const n =
        expected === null
          ? await core.q.run('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value])
          : await core.q.run('UPDATE meta SET value = $1 WHERE key = $2 AND value = $3', [value, key, expected]);
      return n === 1;
    },
  };
}

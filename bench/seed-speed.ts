/**
 * Seeding speed of `seedPairedDevices` on SQLite, store time only (device generation excluded):
 * `node dist/bench/seed-speed.js [devices=100000] [batch=10000] [sorted|random]`. Sorted ids
 * append to the primary-key index; random ones (what real device ids are: key hashes) land all
 * over it, which is what makes large stores slow to seed.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { SeedDevice } from '../src/core/store.js';
import { SqliteStore } from '../src/store/sqlite/store.js';

const [devicesArg, batchArg, orderArg] = process.argv.slice(2);
const devices = Number(devicesArg ?? 100_000);
const batch = Number(batchArg ?? 10_000);
const order = orderArg === 'random' ? 'random' : 'sorted';
const dir = mkdtempSync(join(tmpdir(), 'clawgate-seed-speed-'));
const store = new SqliteStore(join(dir, 'clawgate.sqlite'));
const atMs = Date.now();
const device = (i: number): SeedDevice => ({
  deviceId: order === 'sorted' ? `dev-${String(i).padStart(9, '0')}` : randomBytes(32).toString('hex'),
  publicKey: randomBytes(32).toString('base64url'),
  meta: { displayName: `seeded-${i}`, platform: 'linux' },
  createdAtMs: atMs,
  grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: atMs, approvedVia: 'manual' }],
  tokens: [{ role: 'operator', tokenId: randomUUID(), secretHash: randomBytes(32), createdAtMs: atMs }],
});
let storeMs = 0;
try {
  for (let done = 0; done < devices; done += batch) {
    const chunk = Array.from({ length: Math.min(batch, devices - done) }, (_, k) => device(done + k));
    const t0 = performance.now();
    const res = await store.seedPairedDevices({ devices: chunk, audit: { atMs, actor: 'owner', action: 'devices.seeded', data: { count: chunk.length } } });
    storeMs += performance.now() - t0;
    if (!res.ok) throw new Error(`seeding refused: ${res.reason}`);
  }
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(
  `${devices} devices, batch ${batch}, ${order} ids: ${(storeMs / 1000).toFixed(2)} s, ${Math.round(devices / (storeMs / 1000))} devices/s\n`,
);

/**
 * Crash harness, short mode: a real `clawgate gateway run` under concurrent approvals,
 * rejections, scope upgrades, setup-code races, rotations, revocations, webhook sends and cron
 * runs, SIGKILLed at seeded moments and restarted, with every invariant checked after every
 * restart (test/helpers/chaos.ts; docs/reliability.md). `npm run chaos -- --kills 300` is the long mode.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { checkInvariants, Ledger, runChaos } from './helpers/chaos.js';
import { removeDir } from './helpers/gateway.js';
import { startPgCluster } from './helpers/pg-cluster.js';

/** Fixed in CI; a failure prints it, and `npm run chaos -- --seed <it>` replays the schedule. */
const SEED = 20_261_206;

function assertClean(report: Awaited<ReturnType<typeof runChaos>>, expected: readonly string[]): void {
  assert.deepEqual(report.violations, [], `seed ${report.seed}: ${report.violations.join('\n')}`);
  assert.equal(report.restarts, report.kills + 1, 'the gateway started cleanly after every kill');
  // The run did the traffic it is meant to check (else a quiet harness would pass vacuously).
  for (const what of expected) {
    assert.ok((report.counts[what] ?? 0) > 0, `no ${what} happened: ${JSON.stringify(report.counts)}`);
  }
  removeDir(report.stateDir);
}

test('SQLite: a gateway SIGKILLed 10 times under concurrent trust traffic keeps every invariant after every restart', async () => {
  const expect = ['approve', 'reject', 'rotate', 'revoke', 'send', 'setup-race', 'upgrade-request', 'probe-refused'];
  assertClean(await runChaos({ seed: SEED, kills: 10, devices: 5, expect }), expect);
});

test('PostgreSQL: the same harness, 4 kills, keeps every invariant', async () => {
  const cluster = await startPgCluster();
  try {
    const expect = ['approve', 'revoke', 'send', 'setup-race'];
    assertClean(await runChaos({ seed: SEED + 1, kills: 4, devices: 4, expect, store: { kind: 'postgres', url: await cluster.createDatabase() } }), expect);
  } finally {
    await cluster.stop();
  }
});

test('the invariant checker reports a grant changed behind the audit log, a scope nobody approved and a lost delivery', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-chaos-check-'));
  const file = join(dir, 'clawgate.sqlite');
  try {
    const store = new SqliteStore(file);
    const device = { deviceId: 'd'.repeat(64), publicKey: 'k', meta: {} };
    await store.approve({
      device,
      role: 'operator',
      scopes: ['operator.read'],
      via: 'manual',
      token: null,
      atMs: 1,
      audit: {
        atMs: 1,
        actor: 'owner',
        action: 'pairing.approved',
        subject: device.deviceId,
        data: { requestId: 'r1', role: 'operator', scopes: ['operator.read'] },
      },
    });
    const ledger = new Ledger();
    ledger.facts(device.deviceId).allowed.add('operator.read');
    ledger.approvals.push({ requestId: 'r1', deviceId: device.deviceId, role: 'operator', scopes: ['operator.read'] });
    const run = async (): Promise<string[]> => {
      const found: string[] = [];
      await checkInvariants(store, ledger, [], { final: true, violate: (v) => found.push(v), jobId: 'none' });
      return found;
    };
    assert.deepEqual(await run(), [], 'a consistent store passes');

    // Widen the grant behind the audit log's back (what a torn write would look like).
    const raw = new Database(file);
    raw.prepare('UPDATE grants SET scopes_json = ? WHERE device_id = ?').run(JSON.stringify(['operator.admin', 'operator.read']), device.deviceId);
    raw.close();
    ledger.sends.push({ deliveryId: 'lost-1', idempotencyKey: 'k1', content: 'x' });
    const found = await run();
    assert.ok(
      found.some((v) => /holds \["operator.admin","operator.read"\], the audit log says \["operator.read"\]/.test(v)),
      found.join('\n'),
    );
    assert.ok(
      found.some((v) => /holds operator.admin, which the owner never approved/.test(v)),
      found.join('\n'),
    );
    assert.ok(
      found.some((v) => /send lost-1 .* returned ok but the outbox has no such delivery/.test(v)),
      found.join('\n'),
    );
    await store.close();
  } finally {
    removeDir(dir);
  }
});

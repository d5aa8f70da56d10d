/**
 * The audit log is anchored outside the store (docs/security.md §Audit log): its head is signed
 * with the gateway key into the state dir, so `clawgate audit --verify` (the real CLI, reading
 * the real SQLite file) catches a cut tail, a deleted row, a rewritten and re-hashed chain and a
 * forged anchor, none of which the hash chain alone reveals. Tampering is done the way an
 * attacker with the database file would: better-sqlite3 straight on the file.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { connectGateway, generateIdentity } from '../../src/client/connection.js';
import { type AuditAnchor, signAuditAnchor } from '../../src/core/audit-anchor.js';
import { gatewayIdentityFromPem } from '../../src/core/gateway-identity.js';
import { AUDIT_ANCHOR_FILE } from '../../src/server/audit-anchor.js';
import { type AuditRow, auditHash, GENESIS_HASH, toAudit } from '../../src/store/shared.js';
import { ownerCall } from '../helpers/client.js';
import { removeDir, runClawgate, startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { asClusterOwner, type Instance, removeStateDir, startInstancesAB } from '../helpers/instance.js';
import { pgBinDir, startPgCluster } from '../helpers/pg-cluster.js';

interface VerifyJson {
  entries: Array<{ seq: number; action: string }>;
  verified: boolean;
  brokenAtSeq: number | null;
  anchoredSeq?: number | null;
  unanchored?: number;
  problem?: string;
}

async function verify(
  stateDir: string,
  postgresUrl?: string,
): Promise<{ code: number; body: VerifyJson; human: { code: number; stdout: string; stderr: string } }> {
  // The database URL goes in the environment: it may hold a password, and argv is world-readable.
  const env = { CLAWGATE_STATE_DIR: stateDir, ...(postgresUrl ? { CLAWGATE_POSTGRES_URL: postgresUrl } : {}) };
  const store = postgresUrl ? ['--store', 'postgres'] : [];
  const r = await runClawgate(['audit', '--verify', '--json', ...store], env);
  const human = await runClawgate(['audit', '--verify', ...store], env);
  assert.equal(human.code, r.code, 'human and --json agree on the exit code');
  return { code: r.code, body: JSON.parse(r.stdout) as VerifyJson, human };
}

/** Some real trust changes: a device pairs (approval, token), is renamed, a setup code is minted. */
async function trustChanges(tg: TestGateway, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const id = generateIdentity();
    const c = await connectGateway({ url: tg.url, identity: id, client: { id: 'test', mode: 'test', displayName: `dev${i}` }, auth: { token: TEST_TOKEN } });
    await c.close();
    await ownerCall(tg, 'device.pair.rename', { deviceId: id.deviceId, label: `renamed ${i}` });
  }
  await ownerCall(tg, 'device.pair.setupCode', { label: 'spare' });
}

const db = (dir: string) => new Database(join(dir, 'clawgate.sqlite'));

/** Rewrite every row from `fromSeq` on with correct seqs and hashes, as an attacker who knows the scheme would. */
function rehash(d: Database.Database): void {
  const rows = d.prepare('SELECT * FROM audit ORDER BY seq').all() as AuditRow[];
  d.prepare('DELETE FROM audit').run();
  const insert = d.prepare('INSERT INTO audit (seq, at_ms, actor, action, subject, data_json, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)');
  let prev = GENESIS_HASH;
  rows.forEach((r, i) => {
    const e = toAudit(r);
    const seq = i + 1;
    const hash = auditHash(prev, seq, e);
    insert.run(seq, r.at_ms, r.actor, r.action, r.subject, r.data_json, prev, hash);
    prev = hash;
  });
}

const readAnchor = (dir: string) => JSON.parse(readFileSync(join(dir, AUDIT_ANCHOR_FILE), 'utf8')) as AuditAnchor;

/** The anchor is written just after the commit, off the caller's path: wait (with a deadline) until it reaches `seq`. */
async function anchorAt(dir: string, seq: number, deadlineMs = 10_000): Promise<AuditAnchor> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      const a = readAnchor(dir);
      if (a.seq === seq) return a;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (Date.now() > until) assert.fail(`the anchor in ${dir} did not reach entry ${seq}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('audit --verify against the anchor in the state dir', () => {
  let pristine: string;
  let total: number;
  const dirs: string[] = [];
  /** A copy of the pristine state dir (gateway stopped) to tamper with. */
  const copy = () => {
    const d = mkdtempSync(join(tmpdir(), 'clawgate-audit-'));
    cpSync(pristine, d, { recursive: true });
    dirs.push(d);
    return d;
  };

  before(async () => {
    const tg = await startTestGateway();
    pristine = tg.stateDir;
    await trustChanges(tg, 3);
    total = (await tg.store.listAudit()).length;
    await tg.stop();
    await tg.store.close();
  });
  after(() => {
    removeDir(pristine);
    for (const d of dirs) removeDir(d);
  });

  test('an intact log verifies (exit 0); the anchor is the signed head, mode 0600', async () => {
    assert.ok(total >= 8, `enough entries to tamper with (${total})`);
    const anchor = readAnchor(pristine);
    assert.equal(anchor.seq, total, 'every append was anchored');
    const r = await verify(pristine);
    assert.equal(r.code, 0, r.human.stderr);
    assert.equal(r.body.verified, true);
    assert.equal(r.body.anchoredSeq, total);
    assert.equal(r.body.unanchored, 0);
    assert.match(r.human.stdout, new RegExp(`audit log verified: ${total} entries, chain intact; the head at entry ${total} is signed`));
  });

  test('truncation: the last rows deleted → exit 1, "truncated"', async () => {
    const dir = copy();
    const d = db(dir);
    d.prepare('DELETE FROM audit WHERE seq > ?').run(total - 2);
    d.close();
    const r = await verify(dir);
    assert.equal(r.code, 1);
    assert.equal(r.body.verified, false);
    assert.match(r.body.problem ?? '', new RegExp(`truncated: the anchor vouches for ${total} entries, the store holds ${total - 2}`));
    assert.match(r.human.stderr, /audit log NOT intact: the log was truncated/);
  });

  test('a row deleted in the middle → exit 1, chain broken there', async () => {
    const dir = copy();
    const d = db(dir);
    d.prepare('DELETE FROM audit WHERE seq = 3').run();
    d.close();
    const r = await verify(dir);
    assert.equal(r.code, 1);
    assert.equal(r.body.brokenAtSeq, 4);
    assert.match(r.human.stderr, /hash chain is broken at entry 4/);
  });

  test('a row deleted in the middle and the rest renumbered and re-hashed (a valid chain) → exit 1', async () => {
    const dir = copy();
    const d = db(dir);
    d.prepare('DELETE FROM audit WHERE seq = 3').run();
    rehash(d);
    d.close();
    const r = await verify(dir);
    assert.equal(r.code, 1);
    assert.match(r.body.problem ?? '', /truncated/);
  });

  test('a row rewritten and every later hash recomputed → exit 1, "rewritten"', async () => {
    const dir = copy();
    const d = db(dir);
    d.prepare("UPDATE audit SET actor = 'owner', data_json = NULL WHERE seq = 2").run();
    rehash(d);
    d.close();
    const r = await verify(dir);
    assert.equal(r.code, 1);
    assert.match(r.body.problem ?? '', new RegExp(`entries up to ${total} were rewritten`));
  });

  test('a forged anchor: signed by another key, or edited → exit 1', async () => {
    // The attacker rewrites the log and signs the new head with a key of their own.
    const dir = copy();
    const d = db(dir);
    d.prepare("UPDATE audit SET actor = 'owner' WHERE seq = 2").run();
    rehash(d);
    const head = toAudit(d.prepare('SELECT * FROM audit ORDER BY seq DESC LIMIT 1').get() as AuditRow);
    d.close();
    const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    writeFileSync(join(dir, AUDIT_ANCHOR_FILE), JSON.stringify(signAuditAnchor(gatewayIdentityFromPem(pem), head, Date.now())));
    const other = await verify(dir);
    assert.equal(other.code, 1);
    assert.match(other.body.problem ?? '', /the anchor was signed by key [0-9a-f]{64}, not by this gateway's key/);

    // …or keeps the gateway's public key and signature and edits the hash to the new head.
    const edited = { ...readAnchor(pristine), hash: head.hash };
    writeFileSync(join(dir, AUDIT_ANCHOR_FILE), JSON.stringify(edited));
    const sig = await verify(dir);
    assert.equal(sig.code, 1);
    assert.match(sig.body.problem ?? '', /signature does not verify/);

    // …or replaces the file with something that is not an anchor at all.
    writeFileSync(join(dir, AUDIT_ANCHOR_FILE), '{"v":1}');
    const junk = await verify(dir);
    assert.equal(junk.code, 1);
    assert.match(junk.body.problem ?? '', /is not an audit anchor/);
  });

  test('the anchor deleted → exit 1 (the head is not authenticated)', async () => {
    const dir = copy();
    rmSync(join(dir, AUDIT_ANCHOR_FILE));
    const r = await verify(dir);
    assert.equal(r.code, 1);
    assert.match(r.body.problem ?? '', /no audit anchor/);
  });
});

describe('a running gateway never signs a tampered head', () => {
  test('rows cut under a running gateway: later trust changes and a restart leave the old anchor, and verify keeps failing', async (t) => {
    let tg = await startTestGateway();
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    await trustChanges(tg, 2);
    const before = await anchorAt(tg.stateDir, (await tg.store.listAudit()).length);
    const d = db(tg.stateDir);
    d.prepare('DELETE FROM audit WHERE seq > ?').run(before.seq - 3);
    d.close();

    // A new trust change appends on top of the cut chain; the anchor must not move to it.
    await ownerCall(tg, 'device.pair.setupCode', { label: 'after the cut' });
    await tg.stop();
    tg = await tg.restart();
    await ownerCall(tg, 'device.pair.setupCode', { label: 'after the restart' });
    await tg.stop();

    assert.deepEqual(readAnchor(tg.stateDir), before, 'the anchor is kept as evidence');
    const r = await verify(tg.stateDir);
    assert.equal(r.code, 1);
    assert.match(r.body.problem ?? '', /rewritten|truncated/);
  });
});

describe('PostgreSQL: each instance anchors the shared log in its own state dir', {
  skip: pgBinDir() === null ? 'no PostgreSQL server binaries' : false,
}, () => {
  test('A anchors the head after its appends, B after its own; each state dir verifies the whole chain up to its anchor', async (t) => {
    const cluster = await startPgCluster();
    const url = await cluster.createDatabase();
    const dirs: string[] = [];
    let instances: Instance[] = [];
    t.after(async () => {
      await Promise.all(instances.map((i) => i.stop()));
      await cluster.stop();
      for (const d of dirs) removeStateDir(d);
    });
    const [a, b] = await startInstancesAB(url, dirs);
    instances = [a, b];
    const mint = async (inst: Instance, label: string) => {
      const c = await connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
      try {
        await c.request('device.pair.setupCode', { label });
      } finally {
        await c.close();
      }
    };
    await mint(a, 'on A');
    await mint(b, 'on B 1');
    await mint(b, 'on B 2');
    // SIGTERM: each instance settles its anchor before it exits.
    await Promise.all([a.stop(), b.stop()]);

    const db = new pg.Client({ connectionString: url });
    await db.connect();
    let total: number;
    try {
      total = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit')).rows[0]?.n ?? 0;
    } finally {
      await db.end();
    }
    assert.ok(total >= 3);
    const anchorA = readAnchor(a.stateDir);
    const anchorB = readAnchor(b.stateDir);
    assert.equal(anchorB.seq, total, 'B wrote last: its anchor is the head');
    assert.ok(anchorA.seq < anchorB.seq, 'A anchored the head it saw after its own append');
    assert.equal(anchorA.publicKey, anchorB.publicKey, 'the instances of a cluster share one gateway key (clients verify one key behind the balancer)');

    const viaA = await verify(a.stateDir, url);
    assert.equal(viaA.code, 0, viaA.human.stderr);
    assert.equal(viaA.body.anchoredSeq, anchorA.seq);
    assert.equal(viaA.body.unanchored, total - anchorA.seq, 'entries B wrote later are chained, not anchored by A');
    const viaB = await verify(b.stateDir, url);
    assert.equal(viaB.code, 0, viaB.human.stderr);
    assert.equal(viaB.body.unanchored, 0);

    // Cut the newest entry in the database: B's anchor catches it; A's does not reach it.
    const cut = new pg.Client({ connectionString: url });
    await cut.connect();
    try {
      await cut.query('DELETE FROM audit WHERE seq = $1', [total]);
    } finally {
      await cut.end();
    }
    const cutB = await verify(b.stateDir, url);
    assert.equal(cutB.code, 1);
    assert.match(cutB.body.problem ?? '', /truncated/);
    assert.equal((await verify(a.stateDir, url)).code, 0, "documented: one instance's anchor covers the log up to its own last append");
  });
});

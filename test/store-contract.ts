/**
 * The Store contract: every adapter (SQLite, PostgreSQL) must pass this suite
 * unchanged. It covers every method of the Store interface, the audit guarantees (one entry
 * per trust-changing action, committed atomically with the change, hash-chained) and the
 * concurrency guarantees (one pending request per (device, role), no lost epoch updates).
 *
 * Usage: runStoreContract('sqlite', async () => ({ store, cleanup }))
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes } from '@clawgate/protocol/scopes';
import type {
  ApproveInput,
  AuditEntry,
  AuditInput,
  DeviceMeta,
  DevicePageQuery,
  ImportDevicesInput,
  ImportedDevice,
  NewSetupCode,
  NewToken,
  RedeemSetupInput,
  SeedDevice,
  SetupProfile,
  Store,
  UpsertRequestInput,
} from '../src/core/store.js';
import { DEVICE_PAGE_MAX, SEED_BATCH_MAX } from '../src/core/store.js';
import { IMPORT_BATCH_DEVICES } from '../src/store/import-shared.js';
import { auditHash, GENESIS_HASH, verifyAuditChain } from '../src/store/shared.js';

export interface StoreHandle {
  store: Store;
  cleanup(): Promise<void>;
}

const T0 = 1_700_000_000_000;
const READ = 'operator.read';
const WRITE = 'operator.write';
const ADMIN = 'operator.admin';
const PAIRING = 'operator.pairing';

const DEV_A = 'dev-a';
const DEV_B = 'dev-b';
const KEY_A = 'pk-a';
const KEY_B = 'pk-b';

const TOKEN_KEYS = new Set(['tokenId', 'deviceId', 'role', 'secretHash', 'createdAtMs', 'rotatedAtMs', 'revokedAtMs', 'lastUsedAtMs']);

/** Drop undefined properties, so an absent optional field and an undefined one compare equal. */
function defined<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function audit(action: string, subject?: string, data?: Record<string, unknown>): AuditInput {
  return { atMs: T0, actor: 'owner', action, subject, data };
}

/** A token as the core hands it to the store: a public id and only the hash of the secret. */
function token(id: string): NewToken {
  return { tokenId: id, secretHash: createHash('sha256').update(`secret-of-${id}`).digest() };
}

interface ApproveOpts {
  deviceId?: string;
  publicKey?: string;
  meta?: DeviceMeta;
  address?: string;
  role?: Role;
  scopes?: string[];
  via?: ApproveInput['via'];
  token?: NewToken | null;
  atMs?: number;
  requestId?: string;
  audit?: AuditInput;
}

function approveInput(o: ApproveOpts = {}): ApproveInput {
  const deviceId = o.deviceId ?? DEV_A;
  return {
    device: {
      deviceId,
      publicKey: o.publicKey ?? (deviceId === DEV_B ? KEY_B : KEY_A),
      meta: o.meta ?? { displayName: 'Laptop', platform: 'linux' },
      address: o.address,
    },
    role: o.role ?? 'operator',
    scopes: o.scopes ?? [READ],
    via: o.via ?? 'manual',
    token: o.token === undefined ? token(`tok-${deviceId}-${o.role ?? 'operator'}`) : o.token,
    atMs: o.atMs ?? T0,
    requestId: o.requestId,
    audit: o.audit ?? audit('pairing.approved', deviceId, { role: o.role ?? 'operator' }),
  };
}

interface RequestOpts {
  requestId?: string;
  deviceId?: string;
  role?: Role;
  scopes?: string[];
  kind?: UpsertRequestInput['kind'];
  address?: string;
  atMs?: number;
  isRepair?: boolean;
  meta?: DeviceMeta;
  audit?: AuditInput;
}

function requestInput(o: RequestOpts = {}): UpsertRequestInput {
  const deviceId = o.deviceId ?? DEV_A;
  return {
    requestId: o.requestId ?? 'req-1',
    deviceId,
    publicKey: deviceId === DEV_B ? KEY_B : KEY_A,
    role: o.role ?? 'operator',
    scopes: o.scopes ?? [READ],
    kind: o.kind ?? 'new-device',
    meta: o.meta ?? { displayName: 'Laptop' },
    address: o.address ?? '192.0.2.10',
    isRepair: o.isRepair ?? false,
    atMs: o.atMs ?? T0,
    audit: o.audit ?? audit('pairing.requested', deviceId),
  };
}

async function auditCount(store: Store): Promise<number> {
  return (await store.listAudit()).length;
}

/** Run `fn` and assert it appended exactly `n` audit entries (and, when n = 1, that it is `expect`). */
async function expectAudited<T>(store: Store, n: number, fn: () => Promise<T>, expect?: AuditInput): Promise<T> {
  const before = await store.listAudit();
  const out = await fn();
  const after = await store.listAudit();
  assert.equal(after.length - before.length, n, `expected ${n} new audit entr${n === 1 ? 'y' : 'ies'}`);
  assert.deepEqual(after.slice(0, before.length), before, 'earlier audit entries must not change');
  if (n === 1 && expect) {
    const e = after[after.length - 1] as AuditEntry;
    assert.equal(e.action, expect.action);
    assert.equal(e.actor, expect.actor);
    assert.equal(e.atMs, expect.atMs);
    assert.equal(e.subject, expect.subject);
    assert.deepEqual(e.data, expect.data);
  }
  assert.equal(verifyAuditChain(after), null);
  return out;
}

/** A complete picture of the store, to assert that a failed action changed nothing. */
async function snapshot(store: Store) {
  return {
    devices: await store.listDevices(),
    grants: (await store.listGrants()).sort((a, b) => `${a.deviceId}${a.role}`.localeCompare(`${b.deviceId}${b.role}`)),
    tokens: (await store.listTokens()).sort((a, b) => a.tokenId.localeCompare(b.tokenId)),
    requests: await store.listPairingRequests(),
    audit: await store.listAudit(),
  };
}

export function runStoreContract(name: string, makeStore: () => Promise<StoreHandle>): void {
  /** A test body with a fresh store, always cleaned up. */
  const withStore = (fn: (store: Store) => Promise<void>) => async () => {
    const h = await makeStore();
    try {
      await fn(h.store);
    } finally {
      await h.cleanup();
    }
  };

  describe(`Store contract: ${name}`, () => {
    describe('meta', () => {
      test(
        'getMeta is null for an unknown key; setMeta creates and overwrites',
        withStore(async (store) => {
          assert.equal(await store.getMeta('instance-id'), null);
          await store.setMeta('instance-id', 'one');
          assert.equal(await store.getMeta('instance-id'), 'one');
          await store.setMeta('instance-id', 'two');
          assert.equal(await store.getMeta('instance-id'), 'two');
          await store.setMeta('other', '');
          assert.equal(await store.getMeta('other'), '');
          assert.equal(await store.getMeta('instance-id'), 'two');
          assert.equal(await auditCount(store), 0, 'meta is not a trust change');
        }),
      );
      test(
        'setMetaIf writes only over the expected value (null: absent), and of racing writers exactly one wins',
        withStore(async (store) => {
          assert.equal(await store.setMetaIf('votes', 'x', 'a'), false, 'an absent key is not "x"');
          assert.equal(await store.getMeta('votes'), null);
          assert.equal(await store.setMetaIf('votes', null, 'a'), true);
          assert.equal(await store.setMetaIf('votes', null, 'b'), false, 'the key exists now');
          assert.equal(await store.setMetaIf('votes', 'b', 'c'), false, 'stale expectation');
          assert.equal(await store.getMeta('votes'), 'a');
          const raced = await Promise.all(['1', '2', '3', '4'].map((v) => store.setMetaIf('votes', 'a', v)));
          assert.equal(raced.filter(Boolean).length, 1, 'exactly one racing compare-and-set wins');
          assert.equal(await store.getMeta('votes'), String(raced.indexOf(true) + 1));
        }),
      );
    });

    describe('approve', () => {
      test(
        'creates the device, the grant at epoch 1 and the token',
        withStore(async (store) => {
          const input = approveInput({ scopes: [READ, WRITE], via: 'manual', address: '192.0.2.10', atMs: T0 + 5 });
          const grant = await expectAudited(store, 1, () => store.approve(input), input.audit);
          assert.deepEqual(grant, { deviceId: DEV_A, role: 'operator', scopes: [READ, WRITE], epoch: 1, approvedAtMs: T0 + 5, approvedVia: 'manual' });
          assert.deepEqual(await store.getGrant(DEV_A, 'operator'), grant);
          assert.equal(await store.getGrant(DEV_A, 'node'), null);

          const dev = await store.getDevice(DEV_A);
          assert.ok(dev);
          assert.equal(dev.deviceId, DEV_A);
          assert.equal(dev.publicKey, KEY_A);
          assert.equal(dev.displayName, 'Laptop');
          assert.equal(dev.platform, 'linux');
          assert.equal(dev.createdAtMs, T0 + 5);
          assert.equal(dev.lastSeenAtMs, T0 + 5);
          assert.equal(dev.lastSeenAddress, '192.0.2.10');
          assert.equal(dev.label, undefined);
          assert.deepEqual(
            (await store.listDevices()).map((d) => d.deviceId),
            [DEV_A],
          );
          assert.deepEqual(await store.listGrants(DEV_A), [grant]);

          const tok = await store.getToken(`tok-${DEV_A}-operator`);
          assert.ok(tok);
          assert.equal(tok.deviceId, DEV_A);
          assert.equal(tok.role, 'operator');
          assert.equal(tok.createdAtMs, T0 + 5);
          assert.equal(tok.rotatedAtMs, undefined);
          assert.equal(tok.revokedAtMs, undefined);
          assert.equal(tok.lastUsedAtMs, undefined);
          assert.deepEqual(
            (await store.listTokens(DEV_A)).map((t) => t.tokenId),
            [`tok-${DEV_A}-operator`],
          );
        }),
      );

      test(
        're-approve bumps the epoch, replaces scopes and meta, keeps createdAtMs and the label',
        withStore(async (store) => {
          await store.approve(approveInput({ scopes: [READ], atMs: T0, meta: { displayName: 'Laptop', platform: 'linux' } }));
          await store.renameDevice(DEV_A, 'work laptop', audit('device.renamed', DEV_A));
          const g2 = await store.approve(
            approveInput({ scopes: [ADMIN], via: 'owner', atMs: T0 + 100, publicKey: 'pk-a2', meta: { displayName: 'Laptop 2' }, token: null }),
          );
          assert.equal(g2.epoch, 2);
          assert.deepEqual(g2.scopes, [ADMIN]);
          assert.equal(g2.approvedAtMs, T0 + 100);
          assert.equal(g2.approvedVia, 'owner');
          assert.deepEqual(await store.getGrant(DEV_A, 'operator'), g2);
          const g3 = await store.approve(approveInput({ scopes: [READ], atMs: T0 + 200, token: null }));
          assert.equal(g3.epoch, 3);

          const dev = await store.getDevice(DEV_A);
          assert.ok(dev);
          assert.equal(dev.createdAtMs, T0, 'createdAtMs survives re-approval');
          assert.equal(dev.lastSeenAtMs, T0 + 200);
          assert.equal(dev.label, 'work laptop', 'the operator label survives re-pairing');
          assert.equal((await store.listDevices()).length, 1);
        }),
      );

      test(
        're-approve records the meta and key the device presented this time',
        withStore(async (store) => {
          await store.approve(approveInput({ meta: { displayName: 'Laptop', platform: 'linux', deviceFamily: 'desktop' } }));
          await store.approve(approveInput({ publicKey: 'pk-a2', meta: { displayName: 'Laptop 2', platform: 'darwin' }, token: null, atMs: T0 + 1 }));
          const dev = await store.getDevice(DEV_A);
          assert.ok(dev);
          assert.equal(dev.publicKey, 'pk-a2');
          assert.equal(dev.displayName, 'Laptop 2');
          assert.equal(dev.platform, 'darwin');
          assert.equal(dev.deviceFamily, undefined, 'meta is replaced, not merged');
          assert.equal(dev.lastSeenAddress, undefined);
        }),
      );

      test(
        'a given token replaces the old one (old id gone, createdAtMs kept, rotatedAtMs set)',
        withStore(async (store) => {
          await store.approve(approveInput({ token: token('t1'), atMs: T0 }));
          await store.approve(approveInput({ token: token('t2'), atMs: T0 + 50 }));
          assert.equal(await store.getToken('t1'), null);
          const t2 = await store.getToken('t2');
          assert.ok(t2);
          assert.equal(t2.createdAtMs, T0);
          assert.equal(t2.rotatedAtMs, T0 + 50);
          assert.equal(t2.revokedAtMs, undefined);
          assert.ok(t2.secretHash.equals(token('t2').secretHash));
          assert.deepEqual(
            (await store.listTokens(DEV_A)).map((t) => t.tokenId),
            ['t2'],
          );
        }),
      );

      test(
        'a null token keeps the current one valid',
        withStore(async (store) => {
          await store.approve(approveInput({ token: token('t1'), scopes: [READ] }));
          await store.approve(approveInput({ token: null, scopes: [READ, WRITE], atMs: T0 + 9 }));
          const t1 = await store.getToken('t1');
          assert.ok(t1);
          assert.equal(t1.revokedAtMs, undefined);
          assert.equal(t1.rotatedAtMs, undefined);
          assert.equal(t1.createdAtMs, T0);
          assert.equal((await store.listTokens(DEV_A)).length, 1);
        }),
      );

      test(
        'a null token on a first approval creates a grant without a token',
        withStore(async (store) => {
          const g = await store.approve(approveInput({ token: null }));
          assert.equal(g.epoch, 1);
          assert.deepEqual(await store.listTokens(DEV_A), []);
        }),
      );

      test(
        'the resolved request is deleted in the same action; others stay',
        withStore(async (store) => {
          const op = await store.upsertPairingRequest(requestInput({ requestId: 'r-op', role: 'operator' }));
          const node = await store.upsertPairingRequest(requestInput({ requestId: 'r-node', role: 'node', scopes: [] }));
          await expectAudited(store, 1, () => store.approve(approveInput({ requestId: op.request.requestId })));
          assert.equal(await store.getPairingRequest('r-op'), null);
          assert.deepEqual(await store.getPairingRequest('r-node'), node.request);
          await store.approve(approveInput({ role: 'node', scopes: [], requestId: undefined, atMs: T0 + 1 }));
          assert.ok(await store.getPairingRequest('r-node'), 'without requestId no request is touched');
        }),
      );

      test(
        'roles are independent grants with their own epoch and token',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', scopes: [READ] }));
          await store.approve(approveInput({ role: 'operator', scopes: [WRITE], token: null }));
          const node = await store.approve(approveInput({ role: 'node', scopes: [] }));
          assert.equal(node.epoch, 1);
          assert.equal((await store.getGrant(DEV_A, 'operator'))?.epoch, 2);
          await store.approve(approveInput({ deviceId: DEV_B }));
          assert.equal((await store.listGrants(DEV_A)).length, 2);
          assert.equal((await store.listGrants(DEV_B)).length, 1);
          assert.equal((await store.listGrants()).length, 3);
          assert.equal((await store.listTokens(DEV_A)).length, 2);
          assert.equal((await store.listTokens()).length, 3);
          assert.deepEqual((await store.listDevices()).map((d) => d.deviceId).sort(), [DEV_A, DEV_B]);
          assert.equal(await store.getDevice('nope'), null);
          assert.deepEqual(await store.listGrants('nope'), []);
          assert.deepEqual(await store.listTokens('nope'), []);
        }),
      );

      test(
        'listDevices is ordered by createdAtMs',
        withStore(async (store) => {
          await store.approve(approveInput({ deviceId: DEV_B, atMs: T0 + 10 }));
          await store.approve(approveInput({ deviceId: DEV_A, atMs: T0 + 20 }));
          await store.approve(approveInput({ deviceId: 'dev-c', atMs: T0 + 5 }));
          assert.deepEqual(
            (await store.listDevices()).map((d) => d.deviceId),
            ['dev-c', DEV_B, DEV_A],
          );
        }),
      );
    });

    describe('upsertPairingRequest', () => {
      test(
        'creates one request with the given id and fields',
        withStore(async (store) => {
          const input = requestInput({ requestId: 'r1', scopes: [WRITE, READ], atMs: T0 + 3, meta: { displayName: 'Phone', platform: 'ios' } });
          const res = await expectAudited(store, 1, () => store.upsertPairingRequest(input), input.audit);
          assert.equal(res.created, true);
          assert.equal(res.widened, false);
          const r = res.request;
          assert.equal(r.requestId, 'r1');
          assert.equal(r.deviceId, DEV_A);
          assert.equal(r.publicKey, KEY_A);
          assert.equal(r.role, 'operator');
          assert.deepEqual(r.scopes, [READ, WRITE]);
          assert.equal(r.kind, 'new-device');
          assert.deepEqual(r.meta, { displayName: 'Phone', platform: 'ios' });
          assert.equal(r.address, '192.0.2.10');
          assert.equal(r.isRepair, false);
          assert.equal(r.createdAtMs, T0 + 3);
          assert.equal(r.refreshedAtMs, T0 + 3);
          assert.equal(r.widenedAtMs, undefined);
          assert.deepEqual(await store.getPairingRequest('r1'), r);
          assert.deepEqual(await store.listPairingRequests(), [r]);
          assert.equal(await store.getDevice(DEV_A), null, 'a request does not create a device');
        }),
      );

      test(
        'a retry keeps the id, refreshes the timestamp and records the latest address',
        withStore(async (store) => {
          const first = await store.upsertPairingRequest(requestInput({ requestId: 'r1', atMs: T0 }));
          const retry = await expectAudited(store, 0, () =>
            store.upsertPairingRequest(requestInput({ requestId: 'r2', atMs: T0 + 1000, address: '192.0.2.99' })),
          );
          assert.equal(retry.created, false);
          assert.equal(retry.widened, false);
          assert.equal(retry.request.requestId, first.request.requestId);
          assert.equal(retry.request.createdAtMs, T0);
          assert.equal(retry.request.refreshedAtMs, T0 + 1000);
          assert.equal(retry.request.address, '192.0.2.99');
          assert.equal(await store.getPairingRequest('r2'), null);
          const stored = await store.getPairingRequest('r1');
          assert.equal(stored?.refreshedAtMs, T0 + 1000);
          assert.equal((await store.listPairingRequests()).length, 1);
        }),
      );

      test(
        'a narrower or equal ask does not shrink the request and is not widened',
        withStore(async (store) => {
          await store.upsertPairingRequest(requestInput({ scopes: [READ, WRITE, PAIRING], atMs: T0 }));
          for (const [i, scopes] of [[READ], [], [READ, WRITE, PAIRING], [PAIRING, WRITE]].entries()) {
            const res = await expectAudited(store, 0, () => store.upsertPairingRequest(requestInput({ requestId: `x${i}`, scopes, atMs: T0 + 10 + i })));
            assert.equal(res.widened, false, `ask ${JSON.stringify(scopes)}`);
            assert.equal(res.created, false);
            assert.deepEqual(res.request.scopes, [PAIRING, READ, WRITE].sort());
            assert.equal(res.request.widenedAtMs, undefined);
            assert.equal(res.request.refreshedAtMs, T0 + 10 + i);
          }
          assert.deepEqual((await store.getPairingRequest('req-1'))?.scopes, [PAIRING, READ, WRITE].sort());
        }),
      );

      test(
        'a wider ask adds its scopes and is marked widened',
        withStore(async (store) => {
          await store.upsertPairingRequest(requestInput({ scopes: [READ], atMs: T0 }));
          const wideAudit = audit('pairing.widened', DEV_A, { added: [ADMIN] });
          const res = await expectAudited(
            store,
            1,
            () => store.upsertPairingRequest(requestInput({ requestId: 'other', scopes: [ADMIN], atMs: T0 + 7, audit: wideAudit })),
            wideAudit,
          );
          assert.equal(res.created, false);
          assert.equal(res.widened, true);
          assert.equal(res.request.requestId, 'req-1');
          assert.deepEqual(res.request.scopes, [ADMIN, READ].sort());
          assert.equal(res.request.widenedAtMs, T0 + 7);
          assert.equal(res.request.createdAtMs, T0);
          const stored = await store.getPairingRequest('req-1');
          assert.deepEqual(stored?.scopes, [ADMIN, READ].sort());
          assert.equal(stored?.widenedAtMs, T0 + 7);

          // A later narrower retry keeps both the scopes and the widened mark.
          const again = await store.upsertPairingRequest(requestInput({ scopes: [READ], atMs: T0 + 20 }));
          assert.equal(again.widened, false);
          assert.deepEqual(again.request.scopes, [ADMIN, READ].sort());
          assert.equal(again.request.widenedAtMs, T0 + 7);
          assert.equal(again.request.refreshedAtMs, T0 + 20);
        }),
      );

      test(
        'a different role or device gets its own request',
        withStore(async (store) => {
          const op = await store.upsertPairingRequest(requestInput({ requestId: 'r-op', role: 'operator', atMs: T0 }));
          const node = await store.upsertPairingRequest(requestInput({ requestId: 'r-node', role: 'node', scopes: [], atMs: T0 + 1 }));
          const other = await store.upsertPairingRequest(requestInput({ requestId: 'r-b', deviceId: DEV_B, atMs: T0 + 2 }));
          assert.equal(node.created, true);
          assert.equal(other.created, true);
          assert.notEqual(op.request.requestId, node.request.requestId);
          assert.equal(node.request.role, 'node');
          assert.deepEqual(
            (await store.listPairingRequests()).map((r) => r.requestId),
            ['r-op', 'r-node', 'r-b'],
          );
          assert.deepEqual(
            (await store.listPairingRequests(DEV_A)).map((r) => r.requestId),
            ['r-op', 'r-node'],
          );
          assert.deepEqual(
            (await store.listPairingRequests(DEV_B)).map((r) => r.requestId),
            ['r-b'],
          );
          assert.deepEqual(await store.listPairingRequests('nope'), []);
        }),
      );

      test(
        'the stored request does not alias the caller’s input',
        withStore(async (store) => {
          const input = requestInput({ scopes: [READ], meta: { displayName: 'Phone' } });
          const res = await store.upsertPairingRequest(input);
          input.scopes.push(ADMIN);
          (input.meta as DeviceMeta).displayName = 'Mutated';
          res.request.scopes.push(WRITE);
          res.request.meta.displayName = 'Mutated too';
          const stored = await store.getPairingRequest('req-1');
          assert.deepEqual(stored?.scopes, [READ]);
          assert.equal(stored?.meta.displayName, 'Phone');
        }),
      );
    });

    describe('pairing requests: get, list, delete', () => {
      test(
        'getPairingRequest is null for an unknown id; delete removes once and audits once',
        withStore(async (store) => {
          assert.equal(await store.getPairingRequest('nope'), null);
          assert.deepEqual(await store.listPairingRequests(), []);
          await store.upsertPairingRequest(requestInput({ requestId: 'r1' }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r2', deviceId: DEV_B }));
          const rej = audit('pairing.rejected', DEV_A);
          assert.equal(await expectAudited(store, 1, () => store.deletePairingRequest('r1', rej), rej), true);
          assert.equal(await store.getPairingRequest('r1'), null);
          assert.equal(await expectAudited(store, 0, () => store.deletePairingRequest('r1', rej)), false);
          assert.equal(await expectAudited(store, 0, () => store.deletePairingRequest('never', rej)), false);
          assert.deepEqual(
            (await store.listPairingRequests()).map((r) => r.requestId),
            ['r2'],
          );
          // After a delete, the same (device, role) starts a fresh request.
          const again = await store.upsertPairingRequest(requestInput({ requestId: 'r3', atMs: T0 + 5 }));
          assert.equal(again.created, true);
          assert.equal(again.request.requestId, 'r3');
        }),
      );
    });

    describe('time-bound grants (expireGrant, extendGrant)', () => {
      test(
        'approve records who approved and the expiry; a permanent grant reads without them',
        withStore(async (store) => {
          const g = await store.approve({
            ...approveInput({ scopes: [READ, WRITE] }),
            approvedBy: 'rule:team',
            expiresAtMs: T0 + 100,
            scopesAfterExpiry: [READ],
          });
          assert.equal(g.approvedBy, 'rule:team');
          assert.equal(g.expiresAtMs, T0 + 100);
          assert.deepEqual(g.scopesAfterExpiry, [READ]);
          assert.deepEqual(await store.getGrant(DEV_A, 'operator'), g);
          const permanent = await store.approve(approveInput({ deviceId: DEV_B }));
          assert.equal('expiresAtMs' in permanent, false);
          assert.deepEqual(await store.getGrant(DEV_B, 'operator'), permanent);
        }),
      );

      test(
        'not yet due, permanent or missing: null and nothing changes',
        withStore(async (store) => {
          await store.approve({ ...approveInput(), expiresAtMs: T0 + 100, scopesAfterExpiry: [] });
          await store.approve(approveInput({ deviceId: DEV_B }));
          const before = await snapshot(store);
          const exp = audit('grant.expired', DEV_A);
          assert.equal(await store.expireGrant(DEV_A, 'operator', T0 + 99, exp), null);
          assert.equal(await store.expireGrant(DEV_B, 'operator', T0 + 1000, exp), null);
          assert.equal(await store.expireGrant(DEV_A, 'node', T0 + 1000, exp), null);
          assert.equal(await store.extendGrant(DEV_B, 'operator', T0 + 500, audit('grant.extended', DEV_B)), null, 'a permanent grant has no expiry to move');
          assert.deepEqual(await snapshot(store), before);
        }),
      );

      test(
        'due with nothing kept: the grant goes and its token is revoked, with the audit entry; a second call is null',
        withStore(async (store) => {
          await store.approve({ ...approveInput({ token: token('tx') }), expiresAtMs: T0 + 100, scopesAfterExpiry: [] });
          const exp = audit('grant.expired', DEV_A, { role: 'operator' });
          const res = await expectAudited(store, 1, () => store.expireGrant(DEV_A, 'operator', T0 + 100, exp), exp);
          assert.equal(res?.outcome, 'removed');
          assert.equal(await store.getGrant(DEV_A, 'operator'), null);
          assert.equal((await store.getToken('tx'))?.revokedAtMs, T0 + 100);
          assert.equal(await store.expireGrant(DEV_A, 'operator', T0 + 200, exp), null);
        }),
      );

      test(
        'due with scopes kept: narrowed to them, epoch + 1, no expiry left, token kept',
        withStore(async (store) => {
          await store.approve({ ...approveInput({ token: token('ty'), scopes: [READ, WRITE] }), expiresAtMs: T0 + 100, scopesAfterExpiry: [READ] });
          const exp = audit('grant.expired', DEV_A);
          const res = await expectAudited(store, 1, () => store.expireGrant(DEV_A, 'operator', T0 + 150, exp), exp);
          assert.equal(res?.outcome, 'narrowed');
          const g = await store.getGrant(DEV_A, 'operator');
          assert.deepEqual(res?.grant, g);
          assert.deepEqual(g?.scopes, [READ]);
          assert.equal(g?.epoch, 2);
          assert.equal(g?.expiresAtMs, undefined);
          assert.equal((await store.getToken('ty'))?.revokedAtMs, undefined);
        }),
      );

      test(
        'listTimeBoundGrants lists only grants with an expiry, soonest first, and follows extension and expiry',
        withStore(async (store) => {
          await store.approve(approveInput({ deviceId: DEV_A }));
          await store.approve({ ...approveInput({ deviceId: DEV_B, token: token('tb') }), expiresAtMs: T0 + 300, scopesAfterExpiry: [] });
          await store.approve({
            ...approveInput({ deviceId: DEV_A, role: 'node', scopes: [], token: token('tn') }),
            expiresAtMs: T0 + 100,
            scopesAfterExpiry: [],
          });
          assert.deepEqual(
            (await store.listTimeBoundGrants()).map((g) => [g.deviceId, g.role, g.expiresAtMs]),
            [
              [DEV_A, 'node', T0 + 100],
              [DEV_B, 'operator', T0 + 300],
            ],
          );
          await store.extendGrant(DEV_A, 'node', T0 + 500, audit('grant.extended', DEV_A));
          assert.deepEqual(
            (await store.listTimeBoundGrants()).map((g) => g.deviceId),
            [DEV_B, DEV_A],
          );
          await store.expireGrant(DEV_B, 'operator', T0 + 300, audit('grant.expired', DEV_B));
          assert.deepEqual(
            (await store.listTimeBoundGrants()).map((g) => [g.deviceId, g.role]),
            [[DEV_A, 'node']],
          );
        }),
      );

      test(
        'extendGrant moves the expiry of a time-bound grant (epoch unchanged), audited',
        withStore(async (store) => {
          await store.approve({ ...approveInput(), expiresAtMs: T0 + 100, scopesAfterExpiry: [] });
          const ext = audit('grant.extended', DEV_A);
          const g = await expectAudited(store, 1, () => store.extendGrant(DEV_A, 'operator', T0 + 5000, ext), ext);
          assert.equal(g?.expiresAtMs, T0 + 5000);
          assert.equal(g?.epoch, 1);
          assert.equal(await store.expireGrant(DEV_A, 'operator', T0 + 200, audit('grant.expired', DEV_A)), null, 'no longer due');
        }),
      );
    });

    describe('rotateToken', () => {
      test(
        'is null for a missing grant and changes nothing',
        withStore(async (store) => {
          const rot = audit('token.rotated', DEV_A);
          assert.equal(await expectAudited(store, 0, () => store.rotateToken(DEV_A, 'operator', token('t9'), null, T0, rot)), null);
          await store.approve(approveInput({ role: 'operator' }));
          assert.equal(await expectAudited(store, 0, () => store.rotateToken(DEV_A, 'node', token('t9'), null, T0, rot)), null);
          assert.equal(await store.getToken('t9'), null);
          assert.equal(await store.getGrant(DEV_A, 'node'), null);
        }),
      );

      test(
        'bumps the epoch and replaces the token, keeping createdAtMs and scopes',
        withStore(async (store) => {
          await store.approve(approveInput({ token: token('t1'), scopes: [READ, WRITE], atMs: T0 }));
          const rot = audit('token.rotated', DEV_A, { role: 'operator' });
          const g = await expectAudited(store, 1, () => store.rotateToken(DEV_A, 'operator', token('t2'), null, T0 + 60, rot), rot);
          assert.ok(g);
          assert.equal(g.epoch, 2);
          assert.deepEqual(g.scopes, [READ, WRITE]);
          assert.deepEqual(await store.getGrant(DEV_A, 'operator'), g);
          assert.equal(await store.getToken('t1'), null, 'the old token id is gone');
          const t2 = await store.getToken('t2');
          assert.ok(t2);
          assert.equal(t2.createdAtMs, T0);
          assert.equal(t2.rotatedAtMs, T0 + 60);
          assert.equal(t2.revokedAtMs, undefined);
          assert.ok(t2.secretHash.equals(token('t2').secretHash));
          assert.deepEqual(
            (await store.listTokens(DEV_A)).map((t) => t.tokenId),
            ['t2'],
          );
        }),
      );

      test(
        'optionally replaces the scopes; other roles are untouched',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1'), scopes: [ADMIN] }));
          const node = await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          const g = await store.rotateToken(DEV_A, 'operator', token('op2'), [READ], T0 + 1, audit('token.rotated', DEV_A));
          assert.deepEqual(g?.scopes, [READ]);
          assert.deepEqual((await store.getGrant(DEV_A, 'operator'))?.scopes, [READ]);
          assert.deepEqual(await store.getGrant(DEV_A, 'node'), node);
          assert.ok(await store.getToken('n1'));
          const g3 = await store.rotateToken(DEV_A, 'operator', token('op3'), null, T0 + 2, audit('token.rotated', DEV_A));
          assert.equal(g3?.epoch, 3);
          assert.deepEqual(g3?.scopes, [READ]);
        }),
      );

      test(
        'with a null token the old token is retired and none replaces it',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('t1'), scopes: [ADMIN] }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          const rot = audit('token.rotated', DEV_A, { role: 'operator', retired: true });
          const g = await expectAudited(store, 1, () => store.rotateToken(DEV_A, 'operator', null, [READ], T0 + 10, rot), rot);
          assert.equal(g?.epoch, 2);
          assert.deepEqual(g?.scopes, [READ]);
          assert.equal(await store.getToken('t1'), null);
          assert.deepEqual(
            (await store.listTokens(DEV_A)).map((t) => t.tokenId),
            ['n1'],
          );
          assert.ok(await store.getGrant(DEV_A, 'operator'), 'the grant stays');
          // The next rotation (the device's next connect) mints a token that starts its own lineage.
          await store.rotateToken(DEV_A, 'operator', token('t2'), null, T0 + 20, audit('token.rotated', DEV_A));
          assert.equal((await store.getToken('t2'))?.createdAtMs, T0 + 20);
        }),
      );

      test(
        'on a grant that had no token, the new token is created at atMs',
        withStore(async (store) => {
          await store.approve(approveInput({ token: null, atMs: T0 }));
          await store.rotateToken(DEV_A, 'operator', token('t1'), null, T0 + 30, audit('token.rotated', DEV_A));
          const t1 = await store.getToken('t1');
          assert.ok(t1);
          assert.equal(t1.createdAtMs, T0 + 30);
          assert.equal(t1.revokedAtMs, undefined);
        }),
      );
    });

    // --- token rotation pushed to live sessions (issues 5/9) ---
    describe('issueTokenIfAbsent', () => {
      test(
        'issues only when the grant exists and holds no live token',
        withStore(async (store) => {
          const iss = audit('token.issued', DEV_A, { role: 'node' });
          assert.equal(await expectAudited(store, 0, () => store.issueTokenIfAbsent(DEV_A, 'node', token('n2'), T0, iss)), null, 'no grant');
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          assert.equal(await expectAudited(store, 0, () => store.issueTokenIfAbsent(DEV_A, 'node', token('n2'), T0, iss)), null, 'a live token exists');
          assert.ok(await store.getToken('n1'), 'the live token is untouched');
          assert.equal(await store.getToken('n2'), null);
          await store.rotateToken(DEV_A, 'node', null, null, T0 + 5, audit('token.rotated', DEV_A));
          const g = await expectAudited(store, 1, () => store.issueTokenIfAbsent(DEV_A, 'node', token('n2'), T0 + 6, iss), iss);
          assert.equal(g?.role, 'node');
          assert.deepEqual(g, await store.getGrant(DEV_A, 'node'));
          const n2 = await store.getToken('n2');
          assert.ok(n2);
          assert.equal(n2.createdAtMs, T0 + 6);
          assert.ok(n2.secretHash.equals(token('n2').secretHash));
          assert.equal(await store.issueTokenIfAbsent(DEV_A, 'node', token('n3'), T0 + 7, iss), null, 'only once');
          assert.equal(await store.getToken('n3'), null);
        }),
      );
    });

    describe('revokeToken', () => {
      test(
        'marks the token revoked (row kept) and drops the grant',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1') }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          const rev = audit('token.revoked', DEV_A, { role: 'operator' });
          const t = await expectAudited(store, 1, () => store.revokeToken(DEV_A, 'operator', T0 + 40, rev), rev);
          assert.ok(t);
          assert.equal(t.tokenId, 'op1');
          assert.equal(t.revokedAtMs, T0 + 40);
          const row = await store.getToken('op1');
          assert.ok(row, 'the revoked token row is kept');
          assert.equal(row.revokedAtMs, T0 + 40);
          assert.ok(row.secretHash.equals(token('op1').secretHash));
          assert.equal(await store.getGrant(DEV_A, 'operator'), null, 'the role must be approved again');
          assert.ok(await store.getGrant(DEV_A, 'node'), 'other roles stay');
          assert.equal((await store.getToken('n1'))?.revokedAtMs, undefined);
          assert.ok(await store.getDevice(DEV_A), 'the device stays known');

          // Revoking again finds no grant.
          assert.equal(await expectAudited(store, 0, () => store.revokeToken(DEV_A, 'operator', T0 + 41, rev)), null);
          assert.equal((await store.getToken('op1'))?.revokedAtMs, T0 + 40);
          // Rotating a revoked role is impossible: the grant is gone.
          assert.equal(await store.rotateToken(DEV_A, 'operator', token('op2'), null, T0 + 42, audit('token.rotated')), null);

          // Re-pairing the role issues a fresh, live token.
          const g = await store.approve(approveInput({ role: 'operator', token: token('op3'), atMs: T0 + 50 }));
          assert.ok(g.epoch >= 1);
          const op3 = await store.getToken('op3');
          assert.equal(op3?.revokedAtMs, undefined);
          assert.equal((await store.listTokens(DEV_A)).filter((x) => x.role === 'operator' && x.revokedAtMs === undefined).length, 1);
        }),
      );

      test(
        'is null when there is no grant',
        withStore(async (store) => {
          const rev = audit('token.revoked', DEV_A);
          assert.equal(await expectAudited(store, 0, () => store.revokeToken(DEV_A, 'operator', T0, rev)), null);
          await store.approve(approveInput({ role: 'node', scopes: [] }));
          assert.equal(await expectAudited(store, 0, () => store.revokeToken(DEV_A, 'operator', T0, rev)), null);
        }),
      );
    });

    describe('removeRole', () => {
      test(
        'a mixed-role device keeps its row and its other role',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1') }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r-node', role: 'node', kind: 'scope-upgrade', scopes: ['node.x'] }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r-op', role: 'operator', kind: 'scope-upgrade', scopes: [ADMIN] }));
          const rm = audit('device.role-removed', DEV_A, { role: 'node' });
          assert.equal(await expectAudited(store, 1, () => store.removeRole(DEV_A, 'node', rm), rm), true);
          assert.ok(await store.getDevice(DEV_A));
          assert.equal(await store.getGrant(DEV_A, 'node'), null);
          assert.equal(await store.getToken('n1'), null);
          assert.equal(await store.getPairingRequest('r-node'), null);
          assert.ok(await store.getGrant(DEV_A, 'operator'));
          assert.ok(await store.getToken('op1'));
          assert.ok(await store.getPairingRequest('r-op'));
        }),
      );

      test(
        'removing the last role removes the device row and every token of it',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1') }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          await store.revokeToken(DEV_A, 'node', T0 + 1, audit('token.revoked', DEV_A));
          await store.approve(approveInput({ deviceId: DEV_B, token: token('b1') }));
          assert.equal(await store.removeRole(DEV_A, 'operator', audit('device.role-removed', DEV_A)), true);
          assert.equal(await store.getDevice(DEV_A), null);
          assert.deepEqual(await store.listGrants(DEV_A), []);
          assert.deepEqual(await store.listTokens(DEV_A), [], 'no orphan token rows (revoked ones included)');
          assert.ok(await store.getDevice(DEV_B));
          assert.ok(await store.getToken('b1'));
        }),
      );

      test(
        'is false when the device does not hold the role',
        withStore(async (store) => {
          const rm = audit('device.role-removed', DEV_A);
          assert.equal(await expectAudited(store, 0, () => store.removeRole(DEV_A, 'operator', rm)), false);
          await store.approve(approveInput({ role: 'operator' }));
          assert.equal(await expectAudited(store, 0, () => store.removeRole(DEV_A, 'node', rm)), false);
          assert.ok(await store.getDevice(DEV_A));
        }),
      );
    });

    describe('removeDevice', () => {
      test(
        'removes the device with all its grants, tokens and requests',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1') }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          await store.revokeToken(DEV_A, 'node', T0 + 1, audit('token.revoked', DEV_A));
          await store.upsertPairingRequest(requestInput({ requestId: 'r-op', kind: 'scope-upgrade', scopes: [ADMIN] }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r-node', role: 'node', kind: 'role-upgrade', scopes: [] }));
          await store.approve(approveInput({ deviceId: DEV_B, token: token('b1') }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r-b', deviceId: DEV_B, kind: 'scope-upgrade', scopes: [ADMIN] }));

          const rm = audit('device.removed', DEV_A);
          assert.equal(await expectAudited(store, 1, () => store.removeDevice(DEV_A, rm), rm), true);
          assert.equal(await store.getDevice(DEV_A), null);
          assert.deepEqual(await store.listGrants(DEV_A), []);
          assert.deepEqual(await store.listTokens(DEV_A), []);
          assert.equal(await store.getToken('op1'), null);
          assert.equal(await store.getToken('n1'), null);
          assert.deepEqual(await store.listPairingRequests(DEV_A), []);
          // Another device is untouched.
          assert.ok(await store.getDevice(DEV_B));
          assert.ok(await store.getGrant(DEV_B, 'operator'));
          assert.ok(await store.getToken('b1'));
          assert.ok(await store.getPairingRequest('r-b'));
        }),
      );

      test(
        'removes a never-approved device’s pending requests; false for an unknown device',
        withStore(async (store) => {
          await store.upsertPairingRequest(requestInput({ requestId: 'r1' }));
          const rm = audit('device.removed', DEV_A);
          assert.equal(await expectAudited(store, 1, () => store.removeDevice(DEV_A, rm)), true);
          assert.equal(await store.getPairingRequest('r1'), null);
          assert.equal(await expectAudited(store, 0, () => store.removeDevice(DEV_A, rm)), false);
          assert.equal(await expectAudited(store, 0, () => store.removeDevice('nope', rm)), false);
        }),
      );
    });

    describe('renameDevice', () => {
      test(
        'sets the label; false for an unknown device',
        withStore(async (store) => {
          await store.approve(approveInput());
          const rn = audit('device.renamed', DEV_A, { label: 'kitchen' });
          assert.equal(await expectAudited(store, 1, () => store.renameDevice(DEV_A, 'kitchen', rn), rn), true);
          assert.equal((await store.getDevice(DEV_A))?.label, 'kitchen');
          assert.equal(await store.renameDevice(DEV_A, 'hall', audit('device.renamed', DEV_A)), true);
          assert.equal((await store.getDevice(DEV_A))?.label, 'hall');
          assert.equal(await expectAudited(store, 0, () => store.renameDevice('nope', 'x', rn)), false);
          assert.equal(await store.getDevice('nope'), null);
        }),
      );
    });

    describe('recordSeen', () => {
      test(
        'updates lastSeenAtMs, lastSeenAddress and the token’s lastUsedAtMs, without audit',
        withStore(async (store) => {
          await store.approve(approveInput({ token: token('t1'), address: '192.0.2.1', atMs: T0 }));
          await store.approve(approveInput({ deviceId: DEV_B, token: token('b1'), address: '192.0.2.2', atMs: T0 }));
          await expectAudited(store, 0, () =>
            store.recordSeen([
              { deviceId: DEV_A, atMs: T0 + 100, address: '198.51.100.7', tokenId: 't1' },
              { deviceId: 'nope', atMs: T0 + 100, address: '198.51.100.8' },
              { deviceId: DEV_B, atMs: T0 + 101, address: '198.51.100.9' },
            ]),
          );
          const a = await store.getDevice(DEV_A);
          assert.equal(a?.lastSeenAtMs, T0 + 100);
          assert.equal(a?.lastSeenAddress, '198.51.100.7');
          assert.equal((await store.getToken('t1'))?.lastUsedAtMs, T0 + 100);
          const b = await store.getDevice(DEV_B);
          assert.equal(b?.lastSeenAtMs, T0 + 101);
          assert.equal(b?.lastSeenAddress, '198.51.100.9');
          assert.equal((await store.getToken('b1'))?.lastUsedAtMs, undefined, 'no tokenId, token untouched');
          assert.equal(await store.getDevice('nope'), null, 'recordSeen never creates a device');
          await store.recordSeen([]);
          // A later rotation keeps the row's identity semantics: the new token starts unused.
          await store.rotateToken(DEV_A, 'operator', token('t2'), null, T0 + 200, audit('token.rotated', DEV_A));
          assert.equal((await store.getToken('t2'))?.lastUsedAtMs, undefined);
        }),
      );
    });

    describe('audit log', () => {
      test(
        'appendAudit starts the chain at seq 1 from the genesis hash',
        withStore(async (store) => {
          assert.deepEqual(await store.listAudit(), []);
          const e1 = await store.appendAudit({ atMs: T0, actor: 'gateway', action: 'gateway.started' });
          assert.equal(e1.seq, 1);
          assert.equal(e1.prevHash, GENESIS_HASH);
          assert.match(e1.hash, /^[0-9a-f]{64}$/);
          assert.equal(e1.actor, 'gateway');
          assert.equal(e1.action, 'gateway.started');
          assert.equal(e1.subject, undefined);
          assert.equal(e1.data, undefined);
          const e2 = await store.appendAudit({ atMs: T0 + 1, actor: 'device:x', action: 'auth.failed', subject: 'x', data: { n: 1, nested: { a: [1, 'b'] } } });
          assert.equal(e2.seq, 2);
          assert.equal(e2.prevHash, e1.hash);
          assert.deepEqual(defined(await store.listAudit()), defined([e1, e2]));
        }),
      );

      test(
        'every trust-changing action appends one entry; seq is contiguous and the chain verifies',
        withStore(async (store) => {
          const steps: Array<[string, () => Promise<unknown>]> = [
            ['pairing.requested', () => store.upsertPairingRequest(requestInput({ audit: audit('pairing.requested', DEV_A) }))],
            ['pairing.widened', () => store.upsertPairingRequest(requestInput({ scopes: [ADMIN], audit: audit('pairing.widened', DEV_A) }))],
            ['pairing.approved', () => store.approve(approveInput({ requestId: 'req-1', audit: audit('pairing.approved', DEV_A) }))],
            ['pairing.approved', () => store.approve(approveInput({ role: 'node', scopes: [], audit: audit('pairing.approved', DEV_A) }))],
            ['token.rotated', () => store.rotateToken(DEV_A, 'operator', token('t2'), null, T0, audit('token.rotated', DEV_A))],
            ['device.renamed', () => store.renameDevice(DEV_A, 'x', audit('device.renamed', DEV_A))],
            ['token.revoked', () => store.revokeToken(DEV_A, 'node', T0, audit('token.revoked', DEV_A))],
            [
              'pairing.requested',
              () => store.upsertPairingRequest(requestInput({ deviceId: DEV_B, requestId: 'rb', audit: audit('pairing.requested', DEV_B) })),
            ],
            ['pairing.rejected', () => store.deletePairingRequest('rb', audit('pairing.rejected', DEV_B))],
            ['device.role-removed', () => store.removeRole(DEV_A, 'operator', audit('device.role-removed', DEV_A))],
            ['pairing.approved', () => store.approve(approveInput({ deviceId: DEV_B, audit: audit('pairing.approved', DEV_B) }))],
            ['device.removed', () => store.removeDevice(DEV_B, audit('device.removed', DEV_B))],
            ['custom', () => store.appendAudit(audit('custom'))],
          ];
          for (const [action, run] of steps) {
            await expectAudited(store, 1, run);
            const last = (await store.listAudit()).at(-1);
            assert.equal(last?.action, action);
          }
          // Things that are not trust changes add nothing.
          await store.upsertPairingRequest(requestInput({ deviceId: 'dev-c', requestId: 'rc', audit: audit('pairing.requested', 'dev-c') }));
          await expectAudited(store, 0, async () => {
            await store.setMeta('k', 'v');
            await store.recordSeen([{ deviceId: DEV_A, atMs: T0, address: '::1' }]);
            await store.upsertPairingRequest(requestInput({ deviceId: 'dev-c', requestId: 'rc2', atMs: T0 + 1, audit: audit('pairing.requested', 'dev-c') }));
          });
          const all = await store.listAudit();
          assert.deepEqual(
            all.map((e) => e.seq),
            all.map((_, i) => i + 1),
          );
          assert.equal(verifyAuditChain(all), null);
          for (let i = 1; i < all.length; i++) assert.equal(all[i]?.prevHash, all[i - 1]?.hash);
        }),
      );

      test(
        'listAudit pages with afterSeq and limit',
        withStore(async (store) => {
          for (let i = 0; i < 10; i++) await store.appendAudit({ atMs: T0 + i, actor: 'gateway', action: `a${i}` });
          assert.deepEqual(
            (await store.listAudit({ afterSeq: 3, limit: 4 })).map((e) => e.seq),
            [4, 5, 6, 7],
          );
          assert.deepEqual(
            (await store.listAudit({ afterSeq: 8 })).map((e) => e.seq),
            [9, 10],
          );
          assert.deepEqual(
            (await store.listAudit({ limit: 2 })).map((e) => e.seq),
            [1, 2],
          );
          assert.deepEqual(await store.listAudit({ afterSeq: 10 }), []);
        }),
      );

      test(
        'onAuditAppended: called once per commit that appended, with the entry already readable; never for writes without an entry',
        withStore(async (store) => {
          assert.ok(store.onAuditAppended, 'every adapter reports appends (the audit anchor follows them)');
          // Count calls, and check from inside each call that its entry is already readable (a read
          // started there may finish after later commits, so it proves "at least", never "exactly").
          let calls = 0;
          const readable: Array<Promise<boolean>> = [];
          store.onAuditAppended(() => {
            calls++;
            const atLeast = calls;
            readable.push(store.listAudit().then((l) => l.length >= atLeast));
          });
          // Listeners may run after the commit rather than inside the call: let the event loop turn.
          const settle = () => new Promise((resolve) => setImmediate(resolve));
          await store.approve(approveInput());
          await settle();
          assert.equal(calls, 1, 'one call for the approval commit');
          await store.setMeta('k', 'v');
          await store.recordSeen([{ deviceId: DEV_A, atMs: T0, address: '::1' }]);
          assert.equal(await store.renameDevice('nobody', 'x', audit('device.renamed', 'nobody')), false);
          await settle();
          assert.equal(calls, 1, 'no call for writes without an entry');
          await store.appendAudit(audit('custom'));
          await settle();
          assert.equal(calls, 2);
          assert.deepEqual(await Promise.all(readable), [true, true]);
        }),
      );

      test(
        'a tampered, dropped or reordered entry is detected',
        withStore(async (store) => {
          await store.approve(approveInput());
          await store.renameDevice(DEV_A, 'x', audit('device.renamed', DEV_A, { label: 'x' }));
          await store.revokeToken(DEV_A, 'operator', T0 + 1, audit('token.revoked', DEV_A));
          await store.appendAudit(audit('custom', undefined, { a: 1 }));
          const all = await store.listAudit();
          assert.equal(verifyAuditChain(all), null);

          const edit = (i: number, patch: Partial<AuditEntry>) => all.map((e, j) => (j === i ? { ...e, ...patch } : e));
          assert.equal(verifyAuditChain(edit(1, { data: { label: 'y' } })), 2, 'changed data');
          assert.equal(verifyAuditChain(edit(1, { actor: 'device:evil' })), 2, 'changed actor');
          assert.equal(verifyAuditChain(edit(0, { atMs: T0 + 999 })), 1, 'changed time');
          assert.equal(verifyAuditChain(edit(2, { subject: 'other' })), 3, 'changed subject');
          assert.equal(verifyAuditChain(edit(3, { action: 'other' })), 4, 'changed action');
          assert.equal(verifyAuditChain(all.filter((e) => e.seq !== 2)), 3, 'dropped entry');
          assert.equal(verifyAuditChain([all[0], all[2], all[1], all[3]] as AuditEntry[]), 3, 'reordered');
          // Recomputing one entry's hash does not help: the next link breaks.
          const forged = edit(1, { data: { label: 'y' } });
          const f1 = forged[1] as AuditEntry;
          forged[1] = { ...f1, hash: auditHash(f1.prevHash, f1.seq, f1) };
          assert.equal(verifyAuditChain(forged), 3);
        }),
      );

      test(
        'a change whose audit entry cannot be written is not applied',
        withStore(async (store) => {
          await store.approve(approveInput({ role: 'operator', token: token('op1') }));
          await store.approve(approveInput({ role: 'node', token: token('n1'), scopes: [] }));
          await store.upsertPairingRequest(requestInput({ requestId: 'r1', kind: 'scope-upgrade', scopes: [ADMIN] }));
          // A BigInt cannot be serialized into the audit entry, so appending it throws.
          const bad: AuditInput = { atMs: T0, actor: 'owner', action: 'broken', data: { n: 1n } };
          const before = await snapshot(store);
          const attempts: Array<[string, () => Promise<unknown>]> = [
            ['approve (new device)', () => store.approve(approveInput({ deviceId: DEV_B, audit: bad }))],
            ['approve (existing)', () => store.approve(approveInput({ scopes: [ADMIN], token: token('op2'), requestId: 'r1', audit: bad }))],
            ['upsert (new)', () => store.upsertPairingRequest(requestInput({ deviceId: DEV_B, requestId: 'rb', audit: bad }))],
            ['upsert (widen)', () => store.upsertPairingRequest(requestInput({ scopes: [ADMIN, PAIRING], audit: bad }))],
            ['deletePairingRequest', () => store.deletePairingRequest('r1', bad)],
            ['rotateToken', () => store.rotateToken(DEV_A, 'operator', token('op3'), [ADMIN], T0 + 1, bad)],
            ['revokeToken', () => store.revokeToken(DEV_A, 'operator', T0 + 1, bad)],
            ['removeRole', () => store.removeRole(DEV_A, 'node', bad)],
            ['removeDevice', () => store.removeDevice(DEV_A, bad)],
            ['renameDevice', () => store.renameDevice(DEV_A, 'x', bad)],
            ['appendAudit', () => store.appendAudit(bad)],
          ];
          for (const [what, run] of attempts) {
            await assert.rejects(run(), `${what} must fail`);
            assert.deepEqual(await snapshot(store), before, `${what} must change nothing`);
          }
        }),
      );
    });

    describe('secrets', () => {
      test(
        'only the hash is stored: a Buffer equal to what was given, not aliased',
        withStore(async (store) => {
          const t = token('t1');
          const given = Buffer.from(t.secretHash);
          await store.approve(approveInput({ token: t }));
          t.secretHash.fill(0); // the caller reusing its buffer must not change the stored hash
          const row = await store.getToken('t1');
          assert.ok(row);
          assert.ok(Buffer.isBuffer(row.secretHash));
          assert.ok(row.secretHash.equals(given));
          row.secretHash.fill(1); // nor may a reader's copy
          assert.ok((await store.getToken('t1'))?.secretHash.equals(given));
          for (const k of Object.keys(row)) assert.ok(TOKEN_KEYS.has(k), `unexpected token field ${k}`);

          const t2 = token('t2');
          await store.rotateToken(DEV_A, 'operator', t2, null, T0 + 1, audit('token.rotated', DEV_A));
          const listed = (await store.listTokens(DEV_A))[0];
          assert.ok(listed && Buffer.isBuffer(listed.secretHash));
          assert.ok(listed.secretHash.equals(token('t2').secretHash));
        }),
      );

      test(
        'returned records are copies',
        withStore(async (store) => {
          await store.approve(approveInput({ scopes: [READ] }));
          const g = await store.getGrant(DEV_A, 'operator');
          g?.scopes.push(ADMIN);
          const listed = await store.listGrants(DEV_A);
          listed[0]?.scopes.push(ADMIN);
          assert.deepEqual((await store.getGrant(DEV_A, 'operator'))?.scopes, [READ]);
          const d = await store.getDevice(DEV_A);
          if (d) d.label = 'mutated';
          assert.equal((await store.getDevice(DEV_A))?.label, undefined);
          const [e] = await store.listAudit();
          if (e) e.action = 'mutated';
          assert.equal((await store.listAudit())[0]?.action, 'pairing.approved');
        }),
      );
    });

    describe('concurrency', () => {
      test(
        'many concurrent upserts for one (device, role) yield exactly one request',
        withStore(async (store) => {
          const scopeSets = [[READ], [WRITE], [READ, WRITE], [PAIRING], [READ]];
          const results = await Promise.all(
            Array.from({ length: 40 }, (_, i) =>
              store.upsertPairingRequest(requestInput({ requestId: `r${i}`, scopes: scopeSets[i % scopeSets.length] as string[], atMs: T0 + i })),
            ),
          );
          const reqs = await store.listPairingRequests(DEV_A);
          assert.equal(reqs.length, 1);
          const id = reqs[0]?.requestId;
          assert.ok(results.every((r) => r.request.requestId === id));
          assert.equal(results.filter((r) => r.created).length, 1);
          assert.deepEqual(reqs[0]?.scopes, [PAIRING, READ, WRITE].sort(), 'no ask is lost');
          const audits = await store.listAudit();
          assert.equal(audits.length, results.filter((r) => r.created || r.widened).length);
          assert.equal(verifyAuditChain(audits), null);
        }),
      );

      test(
        'concurrent approvals produce strictly increasing epochs with no lost update',
        withStore(async (store) => {
          const n = 30;
          const grants = await Promise.all(
            Array.from({ length: n }, (_, i) => store.approve(approveInput({ scopes: [READ], token: i % 3 === 0 ? token(`t${i}`) : null, atMs: T0 + i }))),
          );
          assert.deepEqual(
            grants.map((g) => g.epoch).sort((a, b) => a - b),
            Array.from({ length: n }, (_, i) => i + 1),
          );
          assert.equal((await store.getGrant(DEV_A, 'operator'))?.epoch, n);
          assert.equal((await store.listTokens(DEV_A)).length, 1, 'one live token per role');
          const audits = await store.listAudit();
          assert.equal(audits.length, n);
          assert.equal(verifyAuditChain(audits), null);
        }),
      );

      test(
        'concurrent approvals and rotations interleave without lost epochs',
        withStore(async (store) => {
          await store.approve(approveInput({ token: token('t0') }));
          const ops = Array.from({ length: 20 }, (_, i) =>
            i % 2 === 0
              ? store.rotateToken(DEV_A, 'operator', token(`r${i}`), null, T0 + i, audit('token.rotated', DEV_A))
              : store.approve(approveInput({ token: null, atMs: T0 + i })),
          );
          const out = await Promise.all(ops);
          const epochs = out.map((g) => g?.epoch ?? 0).sort((a, b) => a - b);
          assert.deepEqual(
            epochs,
            Array.from({ length: 20 }, (_, i) => i + 2),
          );
          assert.equal((await store.getGrant(DEV_A, 'operator'))?.epoch, 21);
          const toks = await store.listTokens(DEV_A);
          assert.equal(toks.length, 1);
          assert.equal(toks[0]?.createdAtMs, T0, 'the token lineage keeps its creation time');
          assert.equal(verifyAuditChain(await store.listAudit()), null);
        }),
      );
    });

    setupCodeContract(withStore);
    automationsContract(withStore);
    importContract(withStore);
    retentionContract(withStore);
    devicePageContract(withStore);
  });
}

// ---------------------------------------------------------------------------------------------
// Setup codes: kept apart from the rest of the contract on purpose.

function setupCodeContract(withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>): void {
  const GRACE = 600_000;
  const OP_PROFILE: SetupProfile = { name: 'operator', roles: ['operator'], scopes: ['operator.approvals', READ, WRITE] };
  const BOTH_PROFILE: SetupProfile = { name: 'operator+node', roles: ['operator', 'node'], scopes: ['operator.approvals', READ, WRITE] };

  function newCode(o: { setupId?: string; profile?: SetupProfile; expiresAtMs?: number } = {}): NewSetupCode {
    const setupId = o.setupId ?? 'aaaaaaaaaaaaaaaa';
    return {
      setupId,
      secretHash: createHash('sha256').update(`setup-secret-${setupId}`).digest(),
      profile: o.profile ?? OP_PROFILE,
      label: 'phone',
      url: 'ws://127.0.0.1:18789',
      createdAtMs: T0,
      expiresAtMs: o.expiresAtMs ?? T0 + 600_000,
      createdBy: 'owner',
      audit: audit('setup.minted', setupId),
    };
  }

  function redeemInput(
    o: { setupId?: string; deviceId?: string; publicKey?: string; role?: Role; roles?: Role[]; atMs?: number; tag?: string } = {},
  ): RedeemSetupInput {
    const deviceId = o.deviceId ?? DEV_A;
    const tokens: RedeemSetupInput['tokens'] = {};
    for (const r of o.roles ?? ['operator', 'node']) tokens[r] = token(`${o.tag ?? 'b'}-${deviceId}-${r}`);
    return {
      setupId: o.setupId ?? 'aaaaaaaaaaaaaaaa',
      device: { deviceId, publicKey: o.publicKey ?? (deviceId === DEV_B ? KEY_B : KEY_A), meta: { displayName: 'Phone' }, address: '198.51.100.7' },
      role: o.role ?? 'operator',
      tokens,
      atMs: o.atMs ?? T0 + 1000,
      graceMs: GRACE,
      audit: { atMs: o.atMs ?? T0 + 1000, actor: `device:${deviceId}`, action: 'setup.redeemed', subject: deviceId },
      repeatAudit: { atMs: o.atMs ?? T0 + 1000, actor: `device:${deviceId}`, action: 'setup.redeemed-again', subject: deviceId },
    };
  }

  /** Everything, setup codes included, to assert a refused action changed nothing. */
  async function picture(store: Store) {
    return { ...(await snapshot(store)), setups: await store.listSetupCodes() };
  }

  describe('setup codes', () => {
    test(
      'createSetupCode stores the record (hash only) with its audit entry; get/list return copies',
      withStore(async (store) => {
        const input = newCode();
        const created = await expectAudited(store, 1, () => store.createSetupCode(input), input.audit);
        const got = await store.getSetupCode('aaaaaaaaaaaaaaaa');
        assert.ok(got && Buffer.isBuffer(got.secretHash) && got.secretHash.equals(input.secretHash));
        assert.deepEqual(defined(got), defined(created));
        assert.equal(got.failures, 0);
        assert.equal(got.redeemCount, 0);
        assert.equal(got.redeemedAtMs, undefined);
        assert.deepEqual(got.profile, OP_PROFILE);
        got.profile.scopes.push(ADMIN);
        got.secretHash.fill(0);
        const again = await store.getSetupCode('aaaaaaaaaaaaaaaa');
        assert.deepEqual(again?.profile.scopes, OP_PROFILE.scopes);
        assert.ok(again?.secretHash.equals(input.secretHash));
        assert.equal(await store.getSetupCode('bbbbbbbbbbbbbbbb'), null);
        await store.createSetupCode(newCode({ setupId: 'bbbbbbbbbbbbbbbb' }));
        assert.deepEqual(
          (await store.listSetupCodes()).map((c) => c.setupId),
          ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb'],
        );
        const before = await picture(store);
        await assert.rejects(store.createSetupCode(newCode()), 'a duplicate id is refused');
        assert.deepEqual(await picture(store), before);
      }),
    );

    test(
      'a first redemption approves every profile role, replaces tokens, resolves requests and binds the code, in one audited step',
      withStore(async (store) => {
        await store.createSetupCode(newCode({ profile: BOTH_PROFILE }));
        await store.approve(approveInput({ role: 'operator', scopes: [ADMIN], token: token('old-op') }));
        await store.upsertPairingRequest(requestInput({ requestId: 'req-node', role: 'node', scopes: [] }));
        await store.upsertPairingRequest(requestInput({ requestId: 'req-b', deviceId: DEV_B }));
        const input = redeemInput();
        const res = await expectAudited(store, 1, () => store.redeemSetupCode(input), input.audit);
        assert.ok(res.ok);
        assert.equal(res.repeat, false);
        assert.deepEqual(res.resolvedRequestIds, ['req-node']);
        const op = await store.getGrant(DEV_A, 'operator');
        const node = await store.getGrant(DEV_A, 'node');
        assert.deepEqual(op?.scopes, normalizeScopes([ADMIN, 'operator.approvals']), 'an existing grant is widened, never narrowed');
        assert.equal(op?.approvedVia, 'bootstrap');
        assert.equal(op?.epoch, 2);
        assert.deepEqual(node?.scopes, []);
        assert.equal(node?.approvedVia, 'bootstrap');
        assert.deepEqual(
          defined(res.grants).sort((a, b) => a.role.localeCompare(b.role)),
          defined([node, op]).sort((a, b) => (a?.role ?? '').localeCompare(b?.role ?? '')),
        );
        const toks = (await store.listTokens(DEV_A)).map((t) => t.tokenId).sort();
        assert.deepEqual(toks, [`b-${DEV_A}-node`, `b-${DEV_A}-operator`], 'the old operator token is replaced');
        assert.equal((await store.getDevice(DEV_A))?.displayName, 'Phone');
        assert.deepEqual(
          (await store.listPairingRequests()).map((r) => r.requestId),
          ['req-b'],
        );
        const code = await store.getSetupCode('aaaaaaaaaaaaaaaa');
        assert.equal(code?.redeemedAtMs, T0 + 1000);
        assert.equal(code?.redeemCount, 1);
        assert.equal(code?.deviceId, DEV_A);
        assert.equal(code?.publicKey, KEY_A);
        assert.equal(code?.deviceName, 'Phone');
        assert.equal(code?.redeemedRole, 'operator');
        assert.deepEqual(code?.grantEpochs, { operator: 2, node: 1 });
        assert.deepEqual(defined(res.code), defined(code));
      }),
    );

    test(
      'the same key within the grace window gets the same grants with new tokens; another key, or later, is refused',
      withStore(async (store) => {
        await store.createSetupCode(newCode());
        assert.ok((await store.redeemSetupCode(redeemInput({ roles: ['operator'] }))).ok);
        const grant = await store.getGrant(DEV_A, 'operator');
        const input = redeemInput({ roles: ['operator'], tag: 'again', atMs: T0 + 1000 + GRACE });
        const again = await expectAudited(store, 1, () => store.redeemSetupCode(input), input.repeatAudit);
        assert.ok(again.ok && again.repeat);
        assert.deepEqual(await store.getGrant(DEV_A, 'operator'), grant, 'the grant is untouched');
        assert.deepEqual(
          (await store.listTokens(DEV_A)).map((t) => t.tokenId),
          [`again-${DEV_A}-operator`],
        );
        assert.equal((await store.getSetupCode('aaaaaaaaaaaaaaaa'))?.redeemCount, 2);

        const before = await picture(store);
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ deviceId: DEV_B, roles: ['operator'] })), { ok: false, reason: 'used' });
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ publicKey: 'pk-other', roles: ['operator'] })), { ok: false, reason: 'used' });
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ roles: ['operator'], atMs: T0 + 1001 + GRACE })), { ok: false, reason: 'used' });
        assert.deepEqual(await picture(store), before, 'refusals change nothing');

        // Once the grant changed (an operator rotated or revoked it) a repeat may not restore it.
        await store.rotateToken(DEV_A, 'operator', null, null, T0 + 2000, audit('token.rotated', DEV_A));
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ roles: ['operator'], atMs: T0 + 3000 })), { ok: false, reason: 'used' });
      }),
    );

    test(
      'expired, unknown, revoked and burned codes are refused without changing anything',
      withStore(async (store) => {
        await store.createSetupCode(newCode({ expiresAtMs: T0 + 1000 }));
        await store.createSetupCode(newCode({ setupId: 'bbbbbbbbbbbbbbbb' }));
        await store.createSetupCode(newCode({ setupId: 'cccccccccccccccc' }));
        await store.revokeSetupCode('bbbbbbbbbbbbbbbb', T0 + 10, audit('setup.revoked', 'bbbbbbbbbbbbbbbb'));
        for (let i = 0; i < 3; i++) await store.recordSetupFailure('cccccccccccccccc', T0 + 20, 3, audit('setup.burned', 'cccccccccccccccc'));
        const before = await picture(store);
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ roles: ['operator'], atMs: T0 + 1000 })), { ok: false, reason: 'expired' });
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ setupId: 'dddddddddddddddd', roles: ['operator'] })), { ok: false, reason: 'unknown' });
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ setupId: 'bbbbbbbbbbbbbbbb', roles: ['operator'] })), { ok: false, reason: 'revoked' });
        assert.deepEqual(await store.redeemSetupCode(redeemInput({ setupId: 'cccccccccccccccc', roles: ['operator'] })), { ok: false, reason: 'burned' });
        assert.deepEqual(await picture(store), before);
        const missing = redeemInput({ setupId: 'bbbbbbbbbbbbbbbb', roles: [] });
        await store.createSetupCode(newCode({ setupId: 'eeeeeeeeeeeeeeee' }));
        const mid = await picture(store);
        await assert.rejects(store.redeemSetupCode({ ...missing, setupId: 'eeeeeeeeeeeeeeee' }), 'a profile role without a token is a bug');
        assert.deepEqual(await picture(store), mid);
      }),
    );

    test(
      'recordSetupFailure counts wrong secrets and burns the code once at the budget',
      withStore(async (store) => {
        await store.createSetupCode(newCode());
        const burn = audit('setup.burned', 'aaaaaaaaaaaaaaaa');
        for (let i = 1; i < 5; i++) {
          assert.deepEqual(await expectAudited(store, 0, () => store.recordSetupFailure('aaaaaaaaaaaaaaaa', T0 + i, 5, burn)), { failures: i, burned: false });
        }
        assert.deepEqual(await expectAudited(store, 1, () => store.recordSetupFailure('aaaaaaaaaaaaaaaa', T0 + 5, 5, burn), burn), {
          failures: 5,
          burned: true,
        });
        assert.deepEqual(await expectAudited(store, 0, () => store.recordSetupFailure('aaaaaaaaaaaaaaaa', T0 + 6, 5, burn)), { failures: 6, burned: false });
        assert.equal((await store.getSetupCode('aaaaaaaaaaaaaaaa'))?.burnedAtMs, T0 + 5);
        assert.equal(await store.recordSetupFailure('bbbbbbbbbbbbbbbb', T0, 5, burn), null);
      }),
    );

    test(
      'revokeSetupCode revokes once with its audit entry; unknown ids are null',
      withStore(async (store) => {
        await store.createSetupCode(newCode());
        const a = audit('setup.revoked', 'aaaaaaaaaaaaaaaa');
        const first = await expectAudited(store, 1, () => store.revokeSetupCode('aaaaaaaaaaaaaaaa', T0 + 7, a), a);
        assert.equal(first?.changed, true);
        assert.equal(first?.code.revokedAtMs, T0 + 7);
        const second = await expectAudited(store, 0, () => store.revokeSetupCode('aaaaaaaaaaaaaaaa', T0 + 8, a));
        assert.equal(second?.changed, false);
        assert.equal(second?.code.revokedAtMs, T0 + 7);
        assert.equal(await store.revokeSetupCode('bbbbbbbbbbbbbbbb', T0, a), null);
      }),
    );

    test(
      'of many concurrent redemptions by different keys exactly one wins',
      withStore(async (store) => {
        await store.createSetupCode(newCode());
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.redeemSetupCode(redeemInput({ deviceId: `dev-${i}`, publicKey: `pk-${i}`, roles: ['operator'] }))),
        );
        assert.equal(results.filter((r) => r.ok).length, 1);
        assert.ok(results.every((r) => r.ok || r.reason === 'used'));
        assert.equal((await store.listDevices()).length, 1);
        assert.equal(verifyAuditChain(await store.listAudit()), null);
      }),
    );

    // --- nodes: command surfaces ---------------------------------------------------
    describe('node surfaces', () => {
      const nodeGrant = (deviceId = DEV_A) => approveInput({ deviceId, role: 'node', scopes: [], audit: audit('pairing.approved', deviceId) });
      const surfaceInput = (o: { requestId?: string; commands?: string[]; caps?: string[]; atMs?: number; deviceId?: string } = {}) => ({
        requestId: o.requestId ?? 'nreq-1',
        deviceId: o.deviceId ?? DEV_A,
        caps: o.caps ?? ['system'],
        commands: o.commands ?? ['system.run', 'system.which'],
        meta: { displayName: 'Build box', clientId: 'node-host', clientMode: 'node', version: '2026.9.6' },
        address: '192.0.2.50',
        atMs: o.atMs ?? T0,
        audit: audit('node.surface.requested', o.deviceId ?? DEV_A),
      });

      test(
        'one request per node: the same surface refreshes it under its id, another surface replaces it under a new id',
        withStore(async (store) => {
          await store.approve(nodeGrant());
          const first = await expectAudited(store, 1, () => store.upsertNodeSurfaceRequest(surfaceInput()));
          assert.equal(first.created, true);
          assert.equal(first.request.requestId, 'nreq-1');
          const again = await expectAudited(store, 0, () => store.upsertNodeSurfaceRequest(surfaceInput({ requestId: 'nreq-2', atMs: T0 + 5 })));
          assert.equal(again.created, false);
          assert.equal(again.request.requestId, 'nreq-1');
          assert.equal(again.request.createdAtMs, T0);
          assert.equal(again.request.refreshedAtMs, T0 + 5);
          const wider = await expectAudited(store, 1, () =>
            store.upsertNodeSurfaceRequest(surfaceInput({ requestId: 'nreq-3', commands: ['canvas.present', 'system.run', 'system.which'] })),
          );
          assert.equal(wider.created, true);
          assert.equal(wider.replacedRequestId, 'nreq-1');
          assert.equal(await store.getNodeSurfaceRequest('nreq-1'), null);
          assert.deepEqual(
            (await store.listNodeSurfaceRequests()).map((r) => r.requestId),
            ['nreq-3'],
          );
          assert.deepEqual(defined(await store.getNodeSurfaceRequest('nreq-3')), defined(wider.request));
        }),
      );

      test(
        'approval moves the request into the approved surface atomically with its audit entry; reject deletes it',
        withStore(async (store) => {
          await store.approve(nodeGrant());
          await store.approve(nodeGrant(DEV_B));
          await store.upsertNodeSurfaceRequest(surfaceInput());
          await store.upsertNodeSurfaceRequest(surfaceInput({ deviceId: DEV_B, requestId: 'nreq-b' }));
          const a = audit('node.surface.approved', DEV_A, { requestId: 'nreq-1' });
          const surface = await expectAudited(store, 1, () => store.approveNodeSurface('nreq-1', T0 + 9, 'owner', a), a);
          assert.deepEqual(surface, {
            deviceId: DEV_A,
            caps: ['system'],
            commands: ['system.run', 'system.which'],
            requestId: 'nreq-1',
            approvedAtMs: T0 + 9,
            approvedBy: 'owner',
          });
          assert.deepEqual(await store.getNodeSurface(DEV_A), surface);
          assert.equal(await store.getNodeSurfaceRequest('nreq-1'), null);
          assert.equal(await expectAudited(store, 0, () => store.approveNodeSurface('nreq-1', T0, 'owner', a)), null);
          const r = audit('node.surface.rejected', DEV_B);
          assert.equal(await expectAudited(store, 1, () => store.deleteNodeSurfaceRequest('nreq-b', r), r), true);
          assert.equal(await expectAudited(store, 0, () => store.deleteNodeSurfaceRequest('nreq-b', r)), false);
          assert.deepEqual(
            (await store.listNodeSurfaces()).map((s) => s.deviceId),
            [DEV_A],
          );
        }),
      );

      test(
        'the surface goes with the node role: revoke, role removal and device removal drop it and the request',
        withStore(async (store) => {
          for (const [deviceId, drop] of [
            [DEV_A, (s: Store) => s.revokeToken(DEV_A, 'node', T0, audit('token.revoked', DEV_A))],
            [DEV_B, (s: Store) => s.removeRole(DEV_B, 'node', audit('node.removed', DEV_B))],
            ['dev-c', (s: Store) => s.removeDevice('dev-c', audit('device.removed', 'dev-c'))],
          ] as const) {
            await store.approve(nodeGrant(deviceId));
            await store.approve(approveInput({ deviceId, publicKey: `pk-${deviceId}`, role: 'operator', scopes: [READ] }));
            await store.upsertNodeSurfaceRequest(surfaceInput({ deviceId, requestId: `first-${deviceId}` }));
            await store.approveNodeSurface(`first-${deviceId}`, T0, 'owner', audit('node.surface.approved', deviceId));
            await store.upsertNodeSurfaceRequest(surfaceInput({ deviceId, requestId: `wider-${deviceId}`, commands: ['camera.snap'] }));
            assert.ok(await store.getNodeSurface(deviceId));
            await drop(store);
            assert.equal(await store.getNodeSurface(deviceId), null, `surface of ${deviceId} dropped`);
            assert.equal(await store.getNodeSurfaceRequest(`wider-${deviceId}`), null, `request of ${deviceId} dropped`);
          }
          // Dropping an operator role leaves a node's surface alone.
          await store.approve(nodeGrant('dev-d'));
          await store.approve(approveInput({ deviceId: 'dev-d', publicKey: 'pk-d', role: 'operator', scopes: [READ] }));
          await store.upsertNodeSurfaceRequest(surfaceInput({ deviceId: 'dev-d', requestId: 'req-d' }));
          await store.approveNodeSurface('req-d', T0, 'owner', audit('node.surface.approved', 'dev-d'));
          await store.removeRole('dev-d', 'operator', audit('role.removed', 'dev-d'));
          assert.ok(await store.getNodeSurface('dev-d'));
        }),
      );
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Automations: sessions, chat, channels, deliveries, cron.

function automationsContract(withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>): void {
  describe('automations', () => {
    const act = (action: string, subject?: string): AuditInput => ({ atMs: T0, actor: 'internal:cron', action, subject });
    const newSession = (sessionId: string, key: string, parentId?: string) => ({
      sessionId,
      key,
      label: `label ${key}`,
      parentId,
      createdBy: 'owner',
      createdAtMs: T0,
      audit: act('session.created', sessionId),
    });
    const msg = (sessionId: string, text: string, idempotencyKey?: string, atMs = T0 + 1) => ({
      sessionId,
      messageId: `m-${text}`,
      author: 'internal:cron',
      text,
      idempotencyKey,
      atMs,
      audit: act('chat.sent', sessionId),
    });

    test(
      'sessions: create (audited), unique keys, lookup by id or key, children by parent',
      withStore(async (store) => {
        const created = await expectAudited(store, 1, () => store.createChatSession(newSession('s1', 'main')), act('session.created', 's1'));
        assert.ok(created.ok);
        assert.deepEqual(defined(created.session), {
          sessionId: 's1',
          key: 'main',
          label: 'label main',
          createdBy: 'owner',
          createdAtMs: T0,
          updatedAtMs: T0,
          messageCount: 0,
        });
        assert.deepEqual(await expectAudited(store, 0, () => store.createChatSession(newSession('s2', 'main'))), { ok: false, reason: 'key-taken' });
        assert.ok((await store.createChatSession(newSession('c1', 'main/a', 's1'))).ok);
        assert.ok((await store.createChatSession(newSession('c2', 'main/b', 's1'))).ok);
        assert.equal((await store.getChatSession('main'))?.sessionId, 's1');
        assert.equal((await store.getChatSession('c1'))?.parentId, 's1');
        assert.equal(await store.getChatSession('nope'), null);
        assert.deepEqual((await store.listChatSessions({ parentId: 's1' })).map((x) => x.sessionId).sort(), ['c1', 'c2']);
        assert.equal((await store.listChatSessions()).length, 3);
        assert.equal((await store.listChatSessions({ limit: 1 })).length, 1);
      }),
    );

    test(
      'chat messages: seq per session, idempotency key returns the first message, paging both ways',
      withStore(async (store) => {
        await store.createChatSession(newSession('s1', 'main'));
        await store.createChatSession(newSession('s2', 'other'));
        const a = await expectAudited(store, 1, () => store.appendChatMessage(msg('s1', 'one', 'k1')), act('chat.sent', 's1'));
        assert.ok(a.ok && !a.duplicate && a.message.seq === 1);
        const dup = await expectAudited(store, 0, () => store.appendChatMessage({ ...msg('s1', 'other text', 'k1'), messageId: 'm-x' }));
        assert.ok(dup.ok && dup.duplicate);
        assert.deepEqual(defined(dup.message), defined(a.message));
        // The same key in another session is another message.
        const other = await store.appendChatMessage(msg('s2', 'one', 'k1'));
        assert.ok(other.ok && !other.duplicate && other.message.seq === 1);
        for (const t of ['two', 'three', 'four']) await store.appendChatMessage(msg('s1', t, undefined, T0 + 5));
        assert.deepEqual(await store.appendChatMessage(msg('nope', 'x')), { ok: false, reason: 'unknown-session' });
        const s = await store.getChatSession('s1');
        assert.equal(s?.messageCount, 4);
        assert.equal(s?.updatedAtMs, T0 + 5);
        const texts = (list: Array<{ text: string }>) => list.map((m) => m.text);
        assert.deepEqual(texts(await store.listChatMessages('s1')), ['one', 'two', 'three', 'four']);
        assert.deepEqual(texts(await store.listChatMessages('s1', { limit: 2 })), ['three', 'four']);
        assert.deepEqual(texts(await store.listChatMessages('s1', { limit: 2, beforeSeq: 3 })), ['one', 'two']);
        assert.deepEqual(texts(await store.listChatMessages('s1', { afterSeq: 1, limit: 2 })), ['two', 'three']);
        const [first] = await store.listChatMessages('s1', { limit: 1, beforeSeq: 2 });
        assert.deepEqual(defined(first), {
          sessionId: 's1',
          seq: 1,
          messageId: 'm-one',
          author: 'internal:cron',
          text: 'one',
          idempotencyKey: 'k1',
          atMs: T0 + 1,
        });
      }),
    );

    test(
      'concurrent sends with one idempotency key append exactly one message',
      withStore(async (store) => {
        await store.createChatSession(newSession('s1', 'main'));
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.appendChatMessage({ ...msg('s1', `t${i}`, 'same'), messageId: `m${i}` })));
        assert.equal(results.filter((r) => r.ok && !r.duplicate).length, 1);
        assert.equal((await store.listChatMessages('s1')).length, 1);
      }),
    );

    const channel = (over: Partial<{ channelId: string; name: string; url: string; source: 'api' | 'config' }> = {}) => ({
      channelId: over.channelId ?? 'ch1',
      name: over.name ?? 'alerts',
      url: over.url ?? 'https://example.test/hook',
      username: 'bot',
      source: over.source ?? ('api' as const),
      createdBy: 'owner',
      createdAtMs: T0,
      audit: act('channel.added', over.name ?? 'alerts'),
    });

    test(
      'channels: unique names, config channels are replaced in place, remove by id or name',
      withStore(async (store) => {
        const c = await expectAudited(store, 1, () => store.putChannel(channel()), act('channel.added', 'alerts'));
        assert.ok(c.ok && c.created);
        assert.deepEqual(defined(c.channel), {
          channelId: 'ch1',
          name: 'alerts',
          type: 'webhook',
          url: 'https://example.test/hook',
          username: 'bot',
          source: 'api',
          createdBy: 'owner',
          createdAtMs: T0,
        });
        assert.deepEqual(await expectAudited(store, 0, () => store.putChannel(channel({ channelId: 'ch2' }))), { ok: false, reason: 'name-taken' });
        assert.deepEqual(await store.putChannel(channel({ channelId: 'ch2', source: 'config' })), { ok: false, reason: 'name-taken' });
        const cfg = await store.putChannel(channel({ channelId: 'cf1', name: 'ops', source: 'config' }));
        assert.ok(cfg.ok && cfg.created);
        const again = await store.putChannel(channel({ channelId: 'cf2', name: 'ops', source: 'config', url: 'https://example.test/new' }));
        assert.ok(again.ok && !again.created);
        assert.equal(again.channel.channelId, 'cf1', 'a restart keeps the channel id');
        assert.equal(again.channel.url, 'https://example.test/new');
        assert.deepEqual(
          (await store.listChannels()).map((x) => x.name),
          ['alerts', 'ops'],
        );
        assert.equal((await store.getChannel('ops'))?.channelId, 'cf1');
        assert.equal((await store.getChannel('ch1'))?.name, 'alerts');
        assert.equal(await expectAudited(store, 1, () => store.removeChannel('alerts', act('channel.removed', 'alerts'))), true);
        assert.equal(await store.removeChannel('alerts', act('channel.removed')), false);
        assert.equal(await store.getChannel('ch1'), null);
      }),
    );

    const delivery = (id: string, key = `key-${id}`, atMs = T0) => ({
      deliveryId: id,
      channelId: 'ch1',
      channelName: 'alerts',
      body: { content: `hello ${id}`, embeds: [{ title: 't' }] },
      idempotencyKey: key,
      actor: 'internal:cron',
      createdAtMs: atMs,
      audit: act('channel.send', id),
    });

    test(
      'deliveries: persisted pending before any attempt, duplicate keys, due order, attempts, dead letters',
      withStore(async (store) => {
        const first = await expectAudited(store, 1, () => store.enqueueDelivery(delivery('d1')), act('channel.send', 'd1'));
        assert.equal(first.duplicate, false);
        assert.deepEqual(defined(first.delivery), {
          deliveryId: 'd1',
          channelId: 'ch1',
          channelName: 'alerts',
          body: { content: 'hello d1', embeds: [{ title: 't' }] },
          idempotencyKey: 'key-d1',
          actor: 'internal:cron',
          status: 'pending',
          attempts: 0,
          createdAtMs: T0,
          nextAttemptAtMs: T0,
        });
        const dup = await expectAudited(store, 0, () => store.enqueueDelivery(delivery('d9', 'key-d1')));
        assert.equal(dup.duplicate, true);
        assert.equal(dup.delivery.deliveryId, 'd1');
        await store.enqueueDelivery(delivery('d2', undefined, T0 + 10));
        // Each due delivery is asked for once: an adapter shared by several workers may lease
        // what it hands out until the attempt is recorded.
        assert.equal(await store.nextDeliveryDueAtMs(), T0);
        assert.deepEqual(
          (await store.dueDeliveries(T0 + 5, 10)).map((d) => d.deliveryId),
          ['d1'],
        );

        const retry = await expectAudited(store, 0, () =>
          store.recordDeliveryAttempt({ deliveryId: 'd1', atMs: T0 + 1, outcome: 'retry', nextAttemptAtMs: T0 + 100, error: 'HTTP 503', httpStatus: 503 }),
        );
        assert.equal(retry?.attempts, 1);
        assert.equal(retry?.nextAttemptAtMs, T0 + 100);
        assert.equal(retry?.lastError, 'HTTP 503');
        assert.equal(await store.nextDeliveryDueAtMs(), T0 + 10);
        assert.deepEqual(
          (await store.dueDeliveries(T0 + 50, 10)).map((d) => d.deliveryId),
          ['d2'],
        );

        const done = await store.recordDeliveryAttempt({ deliveryId: 'd2', atMs: T0 + 20, outcome: 'delivered', httpStatus: 204 });
        assert.equal(done?.status, 'delivered');
        assert.equal(done?.deliveredAtMs, T0 + 20);
        const deadAudit = act('delivery.dead-lettered', 'd1');
        const dead = await expectAudited(
          store,
          1,
          () => store.recordDeliveryAttempt({ deliveryId: 'd1', atMs: T0 + 200, outcome: 'dead', error: 'gave up', httpStatus: 503, deadAudit }),
          deadAudit,
        );
        assert.equal(dead?.status, 'dead');
        assert.equal(dead?.attempts, 2);
        assert.equal(dead?.deadAtMs, T0 + 200);
        // A finished delivery takes no more attempts.
        assert.equal(await store.recordDeliveryAttempt({ deliveryId: 'd1', atMs: T0 + 300, outcome: 'delivered' }), null);
        assert.equal(await store.recordDeliveryAttempt({ deliveryId: 'missing', atMs: T0, outcome: 'delivered' }), null);
        assert.equal(await store.nextDeliveryDueAtMs(), null);
        assert.deepEqual(
          (await store.listDeliveries()).map((d) => d.deliveryId),
          ['d2', 'd1'],
          'newest first',
        );
        assert.deepEqual(
          (await store.listDeliveries({ status: 'dead' })).map((d) => d.deliveryId),
          ['d1'],
        );
        assert.deepEqual(await store.listDeliveries({ channelId: 'other' }), []);
        assert.equal((await store.listDeliveries({ limit: 1 })).length, 1);
      }),
    );

    const cronJob = (jobId: string) => ({
      jobId,
      name: `job ${jobId}`,
      schedule: { kind: 'cron' as const, expr: '*/5 * * * *', tz: 'Europe/Berlin' },
      action: { kind: 'chat' as const, sessionKey: 'main', text: 'hi', spawn: { label: 'x' } },
      enabled: true,
      createdBy: 'owner',
      createdAtMs: T0,
      nextRunAtMs: T0 + 300_000,
      audit: act('cron.added', jobId),
    });

    test(
      'cron jobs and runs: create, update, runs move the next due time atomically, remove drops the runs',
      withStore(async (store) => {
        const j = await expectAudited(store, 1, () => store.createCronJob(cronJob('j1')), act('cron.added', 'j1'));
        assert.deepEqual(defined(j), defined({ ...cronJob('j1'), audit: undefined, updatedAtMs: T0 }));
        await store.createCronJob({ ...cronJob('j2'), createdAtMs: T0 + 1 });
        assert.deepEqual(
          (await store.listCronJobs()).map((x) => x.jobId),
          ['j1', 'j2'],
        );
        const up = await expectAudited(
          store,
          1,
          () => store.updateCronJob('j1', { enabled: false, nextRunAtMs: null }, T0 + 7, act('cron.updated', 'j1')),
          act('cron.updated', 'j1'),
        );
        assert.equal(up?.enabled, false);
        assert.equal(up?.nextRunAtMs, null);
        assert.equal(up?.updatedAtMs, T0 + 7);
        assert.equal(await store.updateCronJob('nope', { enabled: true }, T0, act('cron.updated')), null);

        const run = {
          runId: 'r1',
          jobId: 'j2',
          trigger: 'catch-up' as const,
          dueAtMs: T0,
          startedAtMs: T0 + 10,
          finishedAtMs: T0 + 12,
          status: 'ok' as const,
          result: { seq: 1 },
        };
        const after = await expectAudited(store, 0, () => store.recordCronRun(run, T0 + 600_000));
        assert.equal(after?.nextRunAtMs, T0 + 600_000);
        assert.equal(after?.lastRunAtMs, T0 + 10);
        await store.recordCronRun({ ...run, runId: 'r2', trigger: 'manual', status: 'error', result: undefined, error: 'boom' }, T0 + 600_000);
        assert.deepEqual(
          (await store.listCronRuns('j2')).map((r) => r.runId),
          ['r2', 'r1'],
          'newest first',
        );
        assert.deepEqual(defined((await store.listCronRuns('j2'))[1]), run);
        assert.equal((await store.listCronRuns('j2', 1)).length, 1);
        assert.equal(await store.recordCronRun({ ...run, runId: 'r3', jobId: 'gone' }, null), null);

        assert.equal(await expectAudited(store, 1, () => store.removeCronJob('j2', act('cron.removed', 'j2'))), true);
        assert.equal(await store.removeCronJob('j2', act('cron.removed', 'j2')), false);
        assert.deepEqual(await store.listCronRuns('j2'), []);
        assert.equal(await store.getCronJob('j2'), null);
        assert.equal(verifyAuditChain(await store.listAudit()), null);
      }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Importing another gateway's paired devices (clawgate import openclaw).

function importContract(withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>): void {
  describe('importDevices', () => {
    const hash = (s: string) => createHash('sha256').update(s).digest();
    const cli: ImportedDevice = {
      deviceId: 'oc-cli',
      publicKey: 'pk-oc-cli',
      meta: { platform: 'linux', clientId: 'cli', clientMode: 'cli' },
      label: 'my laptop',
      createdAtMs: T0 - 1000,
      lastSeenAtMs: T0 - 10,
      grants: [{ role: 'operator', scopes: [ADMIN, READ, WRITE], approvedAtMs: T0 - 900, approvedVia: 'silent' }],
      tokens: [{ role: 'operator', tokenId: 'imp-cli-op', secretHash: hash('cli-op'), createdAtMs: T0 - 900, lastUsedAtMs: T0 - 20 }],
    };
    const node: ImportedDevice = {
      deviceId: 'oc-node',
      publicKey: 'pk-oc-node',
      meta: { displayName: 'build box', platform: 'linux', clientId: 'node-host', clientMode: 'node' },
      createdAtMs: T0 - 800,
      grants: [{ role: 'node', scopes: [], approvedAtMs: T0 - 700, approvedVia: 'bootstrap' }],
      tokens: [{ role: 'node', tokenId: 'imp-node', secretHash: hash('node'), createdAtMs: T0 - 700 }],
      surface: { caps: ['system'], commands: ['system.run', 'system.which'], approvedAtMs: T0 - 650 },
    };
    const input = (o: Partial<ImportDevicesInput> = {}): ImportDevicesInput => ({
      source: 'openclaw:/home/me/.openclaw',
      devices: [cli, node],
      merge: false,
      dryRun: false,
      atMs: T0,
      actor: 'owner',
      ...o,
    });

    test(
      'imports devices, grants, token hashes and the node surface with one audit entry per device',
      withStore(async (store) => {
        const res = await expectAudited(store, 2, () => store.importDevices(input()));
        assert.ok(res.ok);
        assert.equal(res.applied, true);
        assert.deepEqual(
          res.devices.map((d) => [d.deviceId, d.outcome, d.roles, d.tokens, d.surface]),
          [
            ['oc-cli', 'imported', ['operator'], ['operator'], false],
            ['oc-node', 'imported', ['node'], ['node'], true],
          ],
        );
        const dev = await store.getDevice('oc-cli');
        assert.equal(dev?.publicKey, 'pk-oc-cli');
        assert.equal(dev?.label, 'my laptop');
        assert.equal(dev?.clientId, 'cli');
        assert.equal(dev?.createdAtMs, T0 - 1000);
        assert.deepEqual(await store.getGrant('oc-cli', 'operator'), {
          deviceId: 'oc-cli',
          role: 'operator',
          scopes: [ADMIN, READ, WRITE],
          epoch: 1,
          approvedAtMs: T0 - 900,
          approvedVia: 'silent',
        });
        const tok = await store.getToken('imp-cli-op');
        assert.ok(tok);
        assert.equal(tok.deviceId, 'oc-cli');
        assert.equal(tok.role, 'operator');
        assert.ok(tok.secretHash.equals(hash('cli-op')));
        assert.equal(tok.revokedAtMs, undefined);
        assert.equal(tok.lastUsedAtMs, T0 - 20);
        const surface = await store.getNodeSurface('oc-node');
        assert.deepEqual(surface && [surface.caps, surface.commands, surface.approvedAtMs, surface.approvedBy], [
          ['system'],
          ['system.run', 'system.which'],
          T0 - 650,
          'owner',
        ]);
        const entries = (await store.listAudit()).slice(-2);
        assert.deepEqual(
          entries.map((e) => [e.action, e.subject]),
          [
            ['device.imported', 'oc-cli'],
            ['device.imported', 'oc-node'],
          ],
        );
        assert.deepEqual(entries[0]?.data, { source: 'openclaw:/home/me/.openclaw', roles: ['operator'], tokenIds: ['imp-cli-op'], surface: false });
        assert.equal(verifyAuditChain(await store.listAudit()), null);
      }),
    );

    test(
      'a dry run reports the same and writes nothing',
      withStore(async (store) => {
        const dry = await expectAudited(store, 0, () => store.importDevices(input({ dryRun: true })));
        assert.ok(dry.ok);
        assert.equal(dry.applied, false);
        assert.deepEqual(await store.listDevices(), []);
        assert.deepEqual(await store.listTokens(), []);
        assert.deepEqual(await store.listNodeSurfaces(), []);
        const real = await store.importDevices(input());
        assert.ok(real.ok);
        assert.deepEqual(real.devices, dry.devices);
      }),
    );

    test(
      'a repeated import is a no-op: everything unchanged, no audit entry',
      withStore(async (store) => {
        await store.importDevices(input());
        const again = await expectAudited(store, 0, () => store.importDevices(input()));
        assert.ok(again.ok);
        assert.deepEqual(
          again.devices.map((d) => [d.outcome, d.roles, d.tokens, d.surface]),
          [
            ['unchanged', [], [], false],
            ['unchanged', [], [], false],
          ],
        );
        assert.equal((await store.listTokens()).length, 2);
      }),
    );

    test(
      'a target holding other devices is refused without merge (nothing written); with merge they stay',
      withStore(async (store) => {
        await store.approve(approveInput({ token: token('own') }));
        const refused = await expectAudited(store, 0, () => store.importDevices(input()));
        assert.deepEqual(refused, { ok: false, reason: 'not-empty', otherDevices: 1 });
        assert.equal(await store.getDevice('oc-cli'), null);
        const dry = await store.importDevices(input({ dryRun: true }));
        assert.equal(dry.ok, false, 'a dry run is refused the same way');
        const merged = await store.importDevices(input({ merge: true }));
        assert.ok(merged.ok);
        assert.deepEqual(
          merged.devices.map((d) => d.outcome),
          ['imported', 'imported'],
        );
        assert.ok(await store.getGrant(DEV_A, 'operator'));
        assert.ok(await store.getToken('own'));
      }),
    );

    test(
      'a device id held by another key is skipped; a role held here keeps its grant and its (rotated) token',
      withStore(async (store) => {
        await store.importDevices(input());
        // The operator rotated the CLI's token here after the import; the node id is taken by another key.
        await store.rotateToken('oc-cli', 'operator', token('rotated'), [READ], T0 + 1, audit('token.rotated', 'oc-cli'));
        await store.removeDevice('oc-node', audit('device.removed', 'oc-node'));
        await store.approve(approveInput({ deviceId: 'oc-node', publicKey: 'pk-impostor', role: 'node', scopes: [], token: token('impostor') }));
        const again = await expectAudited(store, 0, () => store.importDevices(input({ merge: true })));
        assert.ok(again.ok);
        const [c, n] = again.devices;
        assert.equal(c?.outcome, 'unchanged');
        assert.ok(c?.notes.some((x) => x.includes('kept the token')));
        assert.equal(n?.outcome, 'skipped');
        assert.equal(await store.getToken('imp-cli-op'), null, 'the rotated-away token does not come back');
        assert.deepEqual((await store.getGrant('oc-cli', 'operator'))?.scopes, [READ]);
        assert.equal((await store.getDevice('oc-node'))?.publicKey, 'pk-impostor');
        assert.equal(await store.getToken('imp-node'), null);
      }),
    );

    test(
      'a device already here with one role gains the imported other role (merge)',
      withStore(async (store) => {
        await store.approve(approveInput({ deviceId: 'oc-node', publicKey: 'pk-oc-node', role: 'operator', scopes: [READ], token: token('op') }));
        const both: ImportedDevice = { ...node, grants: [...node.grants, { role: 'operator', scopes: [ADMIN], approvedAtMs: T0, approvedVia: 'manual' }] };
        const res = await store.importDevices(input({ devices: [both], merge: true }));
        assert.ok(res.ok);
        assert.deepEqual(
          res.devices.map((d) => [d.outcome, d.roles, d.tokens, d.surface]),
          [['merged', ['node'], ['node'], true]],
        );
        assert.deepEqual((await store.getGrant('oc-node', 'operator'))?.scopes, [READ], 'the grant held here is not widened');
        assert.ok(await store.getToken('op'));
        assert.ok(await store.getToken('imp-node'));
      }),
    );

    test(
      'all or nothing: a failure on a later device leaves no trace of the earlier ones',
      withStore(async (store) => {
        await store.approve(approveInput({ token: token('taken') }));
        const clash: ImportedDevice = { ...node, tokens: [{ ...(node.tokens[0] as ImportedDevice['tokens'][number]), tokenId: 'taken' }] };
        const before = await store.listAudit();
        await assert.rejects(store.importDevices(input({ devices: [cli, clash], merge: true })));
        assert.equal(await store.getDevice('oc-cli'), null);
        assert.equal(await store.getToken('imp-cli-op'), null);
        assert.equal(await store.getDevice('oc-node'), null);
        assert.equal((await store.getToken('taken'))?.deviceId, DEV_A);
        assert.deepEqual(await store.listAudit(), before);
      }),
    );

    /** `n` operator devices, produced one at a time (a source that never holds them all). */
    function* many(n: number, failAt?: number): Generator<ImportedDevice> {
      for (let i = 0; i < n; i++) {
        if (i === failAt) throw new Error('the source broke mid-way');
        const id = `bulk-${String(i).padStart(5, '0')}`;
        yield {
          deviceId: id,
          publicKey: `pk-${id}`,
          meta: {},
          createdAtMs: T0,
          grants: [{ role: 'operator', scopes: [READ], approvedAtMs: T0, approvedVia: 'manual' }],
          tokens: [{ role: 'operator', tokenId: `tok-${id}`, secretHash: hash(id), createdAtMs: T0 }],
        };
      }
    }

    test(
      'a source of more devices than one batch streams in, all in one transaction',
      withStore(async (store) => {
        const n = IMPORT_BATCH_DEVICES * 2 + 3;
        const res = await expectAudited(store, n, () => store.importDevices(input({ devices: many(n) })));
        assert.ok(res.ok);
        assert.equal(res.devices.length, n);
        assert.ok(res.devices.every((d) => d.outcome === 'imported'));
        assert.equal((await store.listDevices()).length, n);
        assert.equal((await store.getToken(`tok-bulk-${String(n - 1).padStart(5, '0')}`))?.role, 'operator');
        // A repeat is a no-op, batch after batch.
        const again = await expectAudited(store, 0, () => store.importDevices(input({ devices: many(n) })));
        assert.ok(again.ok && again.devices.every((d) => d.outcome === 'unchanged'));
      }),
    );

    test(
      'a refusal found after several batches, and a source failing mid-way, leave nothing behind',
      withStore(async (store) => {
        await store.approve(approveInput());
        const before = await store.listAudit();
        const n = IMPORT_BATCH_DEVICES * 2 + 3;
        // The other device is known to be "other" only once every imported device was read.
        const refused = await store.importDevices(input({ devices: many(n) }));
        assert.deepEqual(refused, { ok: false, reason: 'not-empty', otherDevices: 1 });
        await assert.rejects(store.importDevices(input({ devices: many(n, IMPORT_BATCH_DEVICES + 7), merge: true })), /broke mid-way/);
        assert.deepEqual(
          (await store.listDevices()).map((d) => d.deviceId),
          [DEV_A],
        );
        assert.equal(await store.getToken('tok-bulk-00000'), null);
        assert.deepEqual(await store.listAudit(), before);
      }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Retention: finished records go after their retention, the audit log never does.

function retentionContract(withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>): void {
  const DAY = 24 * 3600_000;
  const act = (action: string, subject?: string): AuditInput => ({ atMs: T0, actor: 'owner', action, subject });
  const none = { deliveredBeforeMs: null, cronRunsBeforeMs: null, signInLinksBeforeMs: null, setupCodesBeforeMs: null };

  /** Delivered at `deliveredAtMs`, or left pending / dead-lettered. */
  async function delivery(store: Store, id: string, end: { delivered: number } | { dead: number } | 'pending'): Promise<void> {
    await store.enqueueDelivery({
      deliveryId: id,
      channelId: 'ch1',
      channelName: 'alerts',
      body: { content: id },
      idempotencyKey: `key-${id}`,
      actor: 'owner',
      createdAtMs: T0,
      audit: act('channel.send', id),
    });
    if (end === 'pending') return;
    if ('delivered' in end) await store.recordDeliveryAttempt({ deliveryId: id, atMs: end.delivered, outcome: 'delivered', httpStatus: 204 });
    else await store.recordDeliveryAttempt({ deliveryId: id, atMs: end.dead, outcome: 'dead', error: 'gone', deadAudit: act('channel.dead', id) });
  }

  const code = (setupId: string, expiresAtMs: number) => ({
    setupId,
    secretHash: createHash('sha256').update(setupId).digest(),
    profile: { name: 'operator' as const, roles: ['operator' as Role], scopes: [READ] },
    url: 'ws://127.0.0.1:18789',
    createdAtMs: T0,
    expiresAtMs,
    createdBy: 'owner',
    audit: act('setup.minted', setupId),
  });

  const link = (o: { usedAtMs?: number; expiresAtMs: number }) => JSON.stringify({ hash: 'ab', createdAtMs: T0, createdBy: 'owner', ...o });

  describe('retention', () => {
    test(
      'pruneRetained deletes delivered webhooks, cron runs, used or expired sign-in links and expired setup codes older than the cutoffs',
      withStore(async (store) => {
        await delivery(store, 'old', { delivered: T0 + DAY });
        await delivery(store, 'new', { delivered: T0 + 10 * DAY });
        await delivery(store, 'dead', { dead: T0 + DAY });
        await delivery(store, 'waiting', 'pending');
        await store.createCronJob({
          jobId: 'j1',
          name: 'job',
          schedule: { kind: 'every', everyMs: 60_000 },
          action: { kind: 'send', channel: 'alerts', content: 'x' },
          enabled: true,
          createdBy: 'owner',
          createdAtMs: T0,
          nextRunAtMs: T0,
          audit: act('cron.added', 'j1'),
        });
        const run = (runId: string, finishedAtMs: number) => ({
          runId,
          jobId: 'j1',
          trigger: 'schedule' as const,
          dueAtMs: finishedAtMs,
          startedAtMs: finishedAtMs,
          finishedAtMs,
          status: 'ok' as const,
        });
        await store.recordCronRun(run('r-old', T0 + DAY), null);
        await store.recordCronRun(run('r-new', T0 + 10 * DAY), null);
        await store.setMeta('dashboard.link.used-old', link({ usedAtMs: T0 + DAY, expiresAtMs: T0 + DAY }));
        await store.setMeta('dashboard.link.used-new', link({ usedAtMs: T0 + 10 * DAY, expiresAtMs: T0 + 10 * DAY }));
        await store.setMeta('dashboard.link.expired-old', link({ expiresAtMs: T0 + DAY }));
        await store.setMeta('dashboard.link.live', link({ expiresAtMs: T0 + 100 * DAY }));
        await store.setMeta('dashboard.link.garbled', 'not json');
        await store.setMeta('gateway.id', 'keep-me');
        // Approval records go with their request: those of a pending request stay, the others go.
        await store.upsertPairingRequest(requestInput({ requestId: 'r-pending', role: 'operator' }));
        await store.setMeta('approval.votes.r-pending', '{"subject":[],"votes":[]}');
        await store.setMeta('approval.proofs.r-pending', '{}');
        await store.setMeta('approval.votes.r-gone', '{"subject":[],"votes":[]}');
        await store.setMeta('approval.proofs.r-gone', '{}');
        await store.createSetupCode(code('aaaaaaaaaaaaaaaa', T0 + DAY));
        await store.createSetupCode(code('bbbbbbbbbbbbbbbb', T0 + 10 * DAY));
        const auditBefore = await store.listAudit({ limit: 10_000 });

        // Nothing is due before the cutoffs say so, and null cutoffs keep everything.
        assert.deepEqual(await store.pruneRetained(none), { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0, approvalRecords: 2 });
        assert.equal(await store.getMeta('approval.votes.r-gone'), null);
        assert.equal(await store.getMeta('approval.proofs.r-gone'), null);
        assert.ok(await store.getMeta('approval.votes.r-pending'));
        assert.ok(await store.getMeta('approval.proofs.r-pending'));
        const cut = T0 + 5 * DAY;
        const counts = await store.pruneRetained({ deliveredBeforeMs: cut, cronRunsBeforeMs: cut, signInLinksBeforeMs: cut, setupCodesBeforeMs: cut });
        assert.deepEqual(counts, { deliveries: 1, cronRuns: 1, signInLinks: 2, setupCodes: 1, approvalRecords: 0 });

        assert.equal(await store.getDelivery('old'), null);
        assert.equal((await store.getDelivery('new'))?.status, 'delivered');
        assert.equal((await store.getDelivery('dead'))?.status, 'dead', 'dead letters stay for the operator');
        assert.equal((await store.getDelivery('waiting'))?.status, 'pending');
        assert.deepEqual(
          (await store.listCronRuns('j1')).map((r) => r.runId),
          ['r-new'],
        );
        assert.equal(await store.getMeta('dashboard.link.used-old'), null);
        assert.equal(await store.getMeta('dashboard.link.expired-old'), null);
        assert.ok(await store.getMeta('dashboard.link.used-new'));
        assert.ok(await store.getMeta('dashboard.link.live'));
        assert.equal(await store.getMeta('dashboard.link.garbled'), 'not json', 'a value it cannot read is left alone');
        assert.equal(await store.getMeta('gateway.id'), 'keep-me');
        assert.equal(await store.getSetupCode('aaaaaaaaaaaaaaaa'), null);
        assert.ok(await store.getSetupCode('bbbbbbbbbbbbbbbb'));

        // The audit log is never pruned, and its chain still verifies.
        const auditAfter = await store.listAudit({ limit: 10_000 });
        assert.deepEqual(auditAfter, auditBefore);
        assert.equal(verifyAuditChain(auditAfter), null);
        // A second pass finds nothing more.
        assert.deepEqual(await store.pruneRetained({ deliveredBeforeMs: cut, cronRunsBeforeMs: cut, signInLinksBeforeMs: cut, setupCodesBeforeMs: cut }), {
          deliveries: 0,
          cronRuns: 0,
          signInLinks: 0,
          setupCodes: 0,
          approvalRecords: 0,
        });
      }),
    );

    test(
      'pendingDeliveryCount counts deliveries still to be sent',
      withStore(async (store) => {
        assert.equal(await store.pendingDeliveryCount(), 0);
        await delivery(store, 'a', 'pending');
        await delivery(store, 'b', 'pending');
        await delivery(store, 'c', { delivered: T0 });
        await store.recordDeliveryAttempt({ deliveryId: 'b', atMs: T0, outcome: 'retry', nextAttemptAtMs: T0 + 1000, error: 'timeout' });
        assert.equal(await store.pendingDeliveryCount(), 2, 'a retry backing off is still queued');
      }),
    );
  });
}

function devicePageContract(withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>): void {
  // --- device pages and bulk seeding ------------------------------------------------------
  const seedDevice = (id: string, createdAtMs: number, over: Partial<SeedDevice> = {}): SeedDevice => ({
    deviceId: id,
    publicKey: `pk-${id}`,
    meta: { displayName: `name of ${id}` },
    createdAtMs,
    grants: [{ role: 'operator', scopes: [READ], approvedAtMs: createdAtMs, approvedVia: 'manual' }],
    tokens: [{ role: 'operator', tokenId: `tok-${id}`, secretHash: createHash('sha256').update(id).digest(), createdAtMs }],
    ...over,
  });
  const seed = async (store: Store, devices: SeedDevice[]) => {
    const r = await store.seedPairedDevices({ devices, audit: audit('devices.seeded', undefined, { count: devices.length }) });
    assert.deepEqual(r, { ok: true, inserted: devices.length });
  };
  /** Every page of a walk, until the last one (which has no next cursor). */
  const walk = async (store: Store, query: Omit<DevicePageQuery, 'cursor'>, between?: (page: number) => Promise<void>) => {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; ; page++) {
      const r = await store.listDevicesPage({ ...query, ...(cursor === undefined ? {} : { cursor }) });
      assert.ok(r.ok, `page ${page}`);
      assert.ok(r.devices.length <= query.limit);
      seen.push(...r.devices.map((d) => d.deviceId));
      if (r.nextCursor === null) return seen;
      assert.equal(r.devices.length, query.limit, 'only the last page is short');
      cursor = r.nextCursor;
      await between?.(page);
    }
  };
  /** The page order: creation time, then the id in byte order. */
  const pageOrder = (ds: Array<{ deviceId: string; createdAtMs: number }>) =>
    [...ds].sort((a, b) => a.createdAtMs - b.createdAtMs || (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0)).map((d) => d.deviceId);

  describe('seedPairedDevices', () => {
    test(
      'inserts approved devices with their grants and token hashes, one audit entry per batch',
      withStore(async (store) => {
        const batch = [seedDevice('s-1', T0), seedDevice('s-2', T0 + 1, { label: 'Kitchen', tokens: [] })];
        const before = await auditCount(store);
        await seed(store, batch);
        assert.equal(await auditCount(store), before + 1);
        const log = await store.listAudit();
        assert.equal(log[log.length - 1]?.action, 'devices.seeded');
        const d1 = await store.getDevice('s-1');
        assert.equal(d1?.publicKey, 'pk-s-1');
        assert.equal(d1?.displayName, 'name of s-1');
        assert.equal((await store.getDevice('s-2'))?.label, 'Kitchen');
        assert.deepEqual(await store.getGrant('s-1', 'operator'), {
          deviceId: 's-1',
          role: 'operator',
          scopes: [READ],
          epoch: 1,
          approvedAtMs: T0,
          approvedVia: 'manual',
        });
        const tok = await store.getToken('tok-s-1');
        assert.equal(tok?.deviceId, 's-1');
        assert.deepEqual(tok?.secretHash, createHash('sha256').update('s-1').digest());
        assert.deepEqual(await store.listTokens('s-2'), []);
        // A seeded device is like any approved one: approving it again moves its epoch on.
        assert.equal((await store.approve(approveInput({ deviceId: 's-1' }))).epoch, 2);
      }),
    );

    test(
      'a batch naming a stored id, or one id twice, is refused whole; an empty or oversized batch is refused',
      withStore(async (store) => {
        await seed(store, [seedDevice('s-1', T0)]);
        const count = await auditCount(store);
        const taken = await store.seedPairedDevices({ devices: [seedDevice('s-2', T0), seedDevice('s-1', T0)], audit: audit('devices.seeded') });
        assert.deepEqual(taken, { ok: false, reason: 'exists', deviceIds: ['s-1'] });
        const twice = await store.seedPairedDevices({ devices: [seedDevice('s-3', T0), seedDevice('s-3', T0)], audit: audit('devices.seeded') });
        assert.deepEqual(twice, { ok: false, reason: 'exists', deviceIds: ['s-3'] });
        assert.deepEqual(await store.seedPairedDevices({ devices: [], audit: audit('devices.seeded') }), { ok: false, reason: 'bad-batch' });
        const huge = Array.from({ length: SEED_BATCH_MAX + 1 }, (_, i) => seedDevice(`h-${i}`, T0));
        assert.deepEqual(await store.seedPairedDevices({ devices: huge, audit: audit('devices.seeded') }), { ok: false, reason: 'bad-batch' });
        // Every offending id at once, each once, in batch order: held ones and repeated ones.
        const both = await store.seedPairedDevices({
          devices: [seedDevice('s-4', T0), seedDevice('s-1', T0), seedDevice('s-5', T0), seedDevice('s-4', T0), seedDevice('s-4', T0)],
          audit: audit('devices.seeded'),
        });
        assert.deepEqual(both, { ok: false, reason: 'exists', deviceIds: ['s-1', 's-4'] });
        assert.equal(await store.getDevice('s-2'), null, 'nothing of a refused batch is written');
        assert.equal(await store.getDevice('s-3'), null);
        assert.equal(await store.getDevice('s-5'), null);
        assert.equal(await store.getToken('tok-s-2'), null, 'nor its tokens');
        assert.deepEqual(await store.listGrants('s-5'), [], 'nor its grants');
        assert.equal(await auditCount(store), count);
      }),
    );

    test(
      'a largest batch, not a multiple of the rows one statement holds, is written whole with a valid audit chain',
      withStore(async (store) => {
        // SEED_BATCH_MAX devices with a remainder: several full multi-row statements and one
        // shorter one per table; devices with no token and with two grants shift the table sizes.
        const many = Array.from({ length: SEED_BATCH_MAX - 7 }, (_, i) =>
          seedDevice(`m-${String(i).padStart(5, '0')}`, T0 + i, {
            ...(i % 3 === 0 ? { tokens: [] } : {}),
            ...(i % 5 === 0
              ? {
                  grants: [
                    { role: 'operator' as Role, scopes: [READ], approvedAtMs: T0, approvedVia: 'manual' as const },
                    { role: 'node' as Role, scopes: [], approvedAtMs: T0, approvedVia: 'manual' as const },
                  ],
                }
              : {}),
          }),
        );
        await seed(store, many);
        await seed(store, [seedDevice('after', T0 + SEED_BATCH_MAX)]);
        assert.equal((await store.listDevices()).length, many.length + 1);
        const last = many[many.length - 1] as SeedDevice;
        assert.equal((await store.getDevice(last.deviceId))?.displayName, `name of ${last.deviceId}`);
        assert.equal((await store.getToken(`tok-${last.deviceId}`))?.deviceId, last.deviceId);
        assert.equal(await store.getToken('tok-m-00000'), null, 'a device seeded without tokens has none');
        assert.deepEqual((await store.listGrants('m-00005')).map((g) => [g.role, g.epoch]).sort(), [
          ['node', 1],
          ['operator', 1],
        ]);
        const log = await store.listAudit();
        assert.deepEqual(
          log.filter((e) => e.action === 'devices.seeded').map((e) => e.data?.count),
          [many.length, 1],
        );
        assert.equal(verifyAuditChain(log), null);
      }),
    );
  });

  describe('listGrantsOfRole', () => {
    test(
      'lists the grants of one role only, by device id, and follows approval and revocation',
      withStore(async (store) => {
        await seed(store, [seedDevice('r-2', T0), seedDevice('r-1', T0, { grants: [] })]);
        await store.approve(approveInput({ deviceId: 'r-1', role: 'node', scopes: [] }));
        await store.approve(approveInput({ deviceId: 'r-0', role: 'node', scopes: [] }));
        const nodes = await store.listGrantsOfRole('node');
        assert.deepEqual(
          nodes.map((g) => [g.deviceId, g.role, g.epoch]),
          [
            ['r-0', 'node', 1],
            ['r-1', 'node', 1],
          ],
        );
        assert.deepEqual(
          (await store.listGrantsOfRole('operator')).map((g) => g.deviceId),
          ['r-2'],
        );
        await store.revokeToken('r-0', 'node', T0, audit('token.revoked', 'r-0'));
        assert.deepEqual(
          (await store.listGrantsOfRole('node')).map((g) => g.deviceId),
          ['r-1'],
        );
      }),
    );
  });

  describe('listDevicesPage', () => {
    test(
      'pages walk every device once, by creation time then id, and only the last page has no next cursor',
      withStore(async (store) => {
        assert.deepEqual(await store.listDevicesPage({ limit: 10 }), { ok: true, devices: [], nextCursor: null });
        // Ties on the creation time, ids inserted out of order, upper and lower case ids.
        const ds = Array.from({ length: 23 }, (_, i) => ({ deviceId: `d-${(i * 7) % 23}${i % 3 === 0 ? 'B' : 'a'}`, createdAtMs: T0 + (i % 4) }));
        await seed(
          store,
          ds.map((d) => seedDevice(d.deviceId, d.createdAtMs)),
        );
        await store.approve(approveInput({ deviceId: 'late', atMs: T0 + 100 }));
        const expected = [...pageOrder(ds), 'late'];
        for (const limit of [1, 5, 8, 24, DEVICE_PAGE_MAX]) assert.deepEqual(await walk(store, { limit }), expected, `limit ${limit}`);
        const first = await store.listDevicesPage({ limit: 5 });
        assert.ok(first.ok);
        assert.deepEqual(
          first.devices.map(defined),
          (await store.listDevices())
            .filter((d) => expected.slice(0, 5).includes(d.deviceId))
            .sort((a, b) => expected.indexOf(a.deviceId) - expected.indexOf(b.deviceId))
            .map(defined),
          'a page holds the same records as the full list',
        );
        const exact = await store.listDevicesPage({ limit: expected.length });
        assert.ok(exact.ok);
        assert.equal(exact.nextCursor, null, 'a page ending exactly at the last device is the last page');
      }),
    );

    test(
      'a walk continues across inserts and removals: nothing listed twice, nothing existing skipped, later devices at the end',
      withStore(async (store) => {
        await seed(
          store,
          Array.from({ length: 12 }, (_, i) => seedDevice(`c-${String(i).padStart(2, '0')}`, T0 + i)),
        );
        const seen = await walk(store, { limit: 4 }, async (page) => {
          if (page === 0) {
            // Added behind the cursor (same time as a listed device, smaller id) and ahead of it.
            await seed(store, [seedDevice('c-00-behind', T0), seedDevice('c-new', T0 + 50)]);
            await store.removeDevice('c-06', audit('device.removed', 'c-06'));
          }
        });
        assert.deepEqual(seen, ['c-00', 'c-01', 'c-02', 'c-03', 'c-04', 'c-05', 'c-07', 'c-08', 'c-09', 'c-10', 'c-11', 'c-new']);
      }),
    );

    test(
      'search keeps devices whose id, label or presented name starts with it (ASCII case-insensitive), and pages like the full list',
      withStore(async (store) => {
        await seed(store, [
          seedDevice('abc-1', T0, { meta: { displayName: 'Phone' } }),
          seedDevice('ABD-2', T0 + 1, { meta: { displayName: 'Laptop' } }),
          seedDevice('xyz-3', T0 + 2, { meta: { displayName: 'abacus' } }),
          seedDevice('xyz-4', T0 + 3, { label: 'Kitchen tablet', meta: { displayName: 'ab-hidden' } }),
          seedDevice('a_b-5', T0 + 4, { meta: {} }),
          seedDevice('axb-6', T0 + 5, { meta: { displayName: 'Ünïcode' } }),
        ]);
        const ids = async (search: string, limit = 10) => walk(store, { limit, search });
        assert.deepEqual(await ids('ab'), ['abc-1', 'xyz-3', 'xyz-4'], 'the id, the presented name, also of a labelled device');
        assert.deepEqual(await ids('AB'), ['abc-1', 'ABD-2', 'xyz-3', 'xyz-4'], 'an id as typed or lowercased, a name case-insensitively');
        assert.deepEqual(await ids('abd'), [], 'an upper-case id is not found by its lowercase form');
        assert.deepEqual(await ids('kitchen'), ['xyz-4'], 'the label');
        assert.deepEqual(await ids('Kitchen T'), ['xyz-4']);
        assert.deepEqual(await ids('a_'), ['a_b-5'], 'no wildcards: _ and % are plain characters');
        assert.deepEqual(await ids('%'), []);
        assert.deepEqual(await ids('xyz'), ['xyz-3', 'xyz-4']);
        assert.deepEqual(await ids('xyz', 1), ['xyz-3', 'xyz-4'], 'a search pages with its cursor');
        assert.deepEqual(await ids('Ünï'), ['axb-6'], 'beyond ASCII, letters compare as written');
        assert.deepEqual(await ids('ünï'), []);
        assert.deepEqual(await ids('nothing'), []);
        assert.deepEqual(await ids(''), ['abc-1', 'ABD-2', 'xyz-3', 'xyz-4', 'a_b-5', 'axb-6'], 'an empty search is no search');
      }),
    );

    test(
      'a limit outside 1..DEVICE_PAGE_MAX and a cursor this store did not issue are refused as values',
      withStore(async (store) => {
        await seed(store, [seedDevice('v-1', T0), seedDevice('v-2', T0 + 1)]);
        for (const limit of [0, -1, 1.5, DEVICE_PAGE_MAX + 1, Number.NaN]) {
          assert.deepEqual(await store.listDevicesPage({ limit }), { ok: false, reason: 'bad-limit' }, `limit ${limit}`);
        }
        const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
        for (const cursor of [
          '',
          'not a cursor!',
          b64({ a: 1 }),
          b64([T0]),
          b64([-1, 'v-1']),
          b64([T0, '']),
          b64(['x', 'v-1']),
          b64([1.5, 'v-1']),
          'x'.repeat(600),
        ]) {
          assert.deepEqual(await store.listDevicesPage({ limit: 1, cursor }), { ok: false, reason: 'bad-cursor' }, `cursor ${cursor}`);
        }
        const first = await store.listDevicesPage({ limit: 1 });
        assert.ok(first.ok && first.nextCursor);
        const second = await store.listDevicesPage({ limit: 1, cursor: first.nextCursor });
        assert.ok(second.ok);
        assert.deepEqual(
          second.devices.map((d) => d.deviceId),
          ['v-2'],
        );
        assert.equal(second.nextCursor, null);
      }),
    );
  });
}

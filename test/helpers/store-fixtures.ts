/** Inputs and shared checks of the adapter-specific store tests (SQLite, PostgreSQL). */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ApproveInput, AuditInput, PairingRequest, Store, UpsertRequestInput } from '../../src/core/store.js';
import { verifyAuditChain } from '../../src/store/shared.js';

export const T0 = 1_700_000_000_000;
export const audit = (action: string, subject?: string): AuditInput => ({ atMs: T0, actor: 'owner', action, subject });
export const hash = (s: string) => createHash('sha256').update(s).digest();

export function approveInput(deviceId: string, over: Partial<ApproveInput> = {}): ApproveInput {
  return {
    device: { deviceId, publicKey: `pk-${deviceId}`, meta: { displayName: deviceId }, address: '192.0.2.1' },
    role: 'operator',
    scopes: ['operator.read'],
    via: 'manual',
    token: { tokenId: `tok-${deviceId}`, secretHash: hash(deviceId) },
    atMs: T0,
    audit: audit('pairing.approved', deviceId),
    ...over,
  };
}
/**
 * Exactly what an owner's approval of a pending request commits (the device, its grant, the
 * request removed, the audit entry), written straight to the store: no gateway is told.
 */
export async function approveRequestInStore(store: Store, r: PairingRequest): Promise<void> {
  const atMs = Date.now();
  await store.approve({
    device: { deviceId: r.deviceId, publicKey: r.publicKey, meta: r.meta, address: r.address },
    role: r.role,
    scopes: r.scopes,
    via: 'owner',
    token: null,
    atMs,
    requestId: r.requestId,
    audit: { atMs, actor: 'owner', action: 'pairing.approved', subject: r.deviceId, data: { requestId: r.requestId, role: r.role, scopes: r.scopes } },
  });
}

export function requestInput(deviceId: string, requestId: string, scopes: string[] = ['operator.read']): UpsertRequestInput {
  return {
    requestId,
    deviceId,
    publicKey: `pk-${deviceId}`,
    role: 'operator',
    scopes,
    kind: 'new-device',
    meta: {},
    address: '192.0.2.1',
    isRepair: false,
    atMs: T0,
    audit: audit('pairing.requested', deviceId),
  };
}

/**
 * Two stores on one database (two connections, two instances) writing at once: one pending request
 * per (device, role), every approval's epoch kept, one unbroken audit chain. Closes both.
 */
export async function assertWritersSerialize(a: Store, b: Store): Promise<void> {
  try {
    await writeAtOnce(a, b);
  } finally {
    await a.close();
    await b.close();
  }
}

async function writeAtOnce(a: Store, b: Store): Promise<void> {
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      (i % 2 ? a : b).upsertPairingRequest(requestInput('d1', `r${i}`, i % 4 === 0 ? ['operator.write'] : ['operator.read'])),
    ),
  );
  assert.equal((await a.listPairingRequests('d1')).length, 1);
  assert.equal(new Set(results.map((r) => r.request.requestId)).size, 1);
  assert.equal(results.filter((r) => r.created).length, 1);

  const grants = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).approve(approveInput('d2', { token: null, atMs: T0 + i }))));
  assert.deepEqual(
    grants.map((g) => g.epoch).sort((x, y) => x - y),
    Array.from({ length: 20 }, (_, i) => i + 1),
  );
  assert.equal((await b.getGrant('d2', 'operator'))?.epoch, 20);
  const log = await a.listAudit();
  assert.deepEqual(
    log.map((e) => e.seq),
    log.map((_, i) => i + 1),
  );
  assert.equal(verifyAuditChain(log), null);
}

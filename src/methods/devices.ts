/**
 * Device pairing and token management: device.pair.list|approve|reject|remove|rename and
 * device.token.rotate|revoke. Who may do what is decided by core/management-policy.ts (PROTOCOL.md
 * §Device management); this module validates params, asks the policy, and carries the change out.
 * Every change takes effect on live sockets at once (widened in place or closed).
 */

import { confirmationCode } from '@clawgate/protocol/confirmation';
import { GatewayError } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { ADMIN, normalizeScopes, PAIRING, uncoveredScopes } from '@clawgate/protocol/scopes';
import { unsafeFieldError } from '@clawgate/protocol/text';
import type { AuditEntryView, DeviceView, NodeSurfaceView, PendingNodeSurfaceView, PendingView } from '@clawgate/protocol/views';
import { Type as T } from '@sinclair/typebox';
import { deviceRequestState, voteOnDeviceRequest } from '../core/approval-flow.js';
import { parseDuration } from '../core/approval-policy.js';
import { grantExtras } from '../core/explain.js';
import type { Gateway } from '../core/gateway.js';
import { approvalDenial, deviceManagementDenial, rejectionDenial, tokenDenial } from '../core/management-policy.js';
import { isAdmin } from '../core/principal.js';
import { mintToken } from '../core/secrets.js';
import {
  DEVICE_PAGE_DEFAULT,
  DEVICE_PAGE_MAX,
  DEVICE_SEARCH_MAX_CHARS,
  type DeviceRecord,
  type GrantRecord,
  type NodeSurfaceRecord,
  type NodeSurfaceRequest,
  type PairingRequest,
  type TokenRecord,
} from '../core/store.js';
import { deviceMatchesSearch } from '../store/device-page.js';

/** The wire views live in the protocol module; re-exported for the gateway code that builds them. */
export type { DeviceView, NodeSurfaceView, PendingNodeSurfaceView, PendingView };

const RoleSchema = T.Union([T.Literal('operator'), T.Literal('node')]);
const DeviceId = T.String({ minLength: 1, maxLength: 128 });
const RequestId = T.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
const Scopes = T.Array(T.String({ minLength: 1, maxLength: 128 }), { maxItems: 64 });

/** The node fields of a device row; absent for a device without the node role. */
function viewNodeSurfaces(
  grants: GrantRecord[],
  surface: NodeSurfaceRecord | undefined,
  request: NodeSurfaceRequest | undefined,
): Pick<DeviceView, 'nodeSurface' | 'pendingNodeSurface'> {
  if (!grants.some((g) => g.role === 'node')) return {};
  return {
    nodeSurface: surface
      ? { caps: surface.caps, commands: surface.commands, requestId: surface.requestId, createdAtMs: surface.approvedAtMs, approvedAtMs: surface.approvedAtMs }
      : null,
    pendingNodeSurface: request
      ? {
          requestId: request.requestId,
          revision: request.requestId,
          displayName: request.meta.displayName ?? null,
          platform: request.meta.platform ?? null,
          caps: request.caps,
          commands: request.commands,
          remoteIp: request.address,
          createdAtMs: request.createdAtMs,
          ts: request.refreshedAtMs,
        }
      : null,
  };
}

/** Records by device id; the first record of a device wins, as `find` would pick it. */
export function byDevice<R extends { deviceId: string }>(records: readonly R[]): Map<string, R> {
  const out = new Map<string, R>();
  for (const r of records) if (!out.has(r.deviceId)) out.set(r.deviceId, r);
  return out;
}

/** Records grouped by device id, in their original order. */
function groupByDevice<R extends { deviceId: string }>(records: readonly R[]): Map<string, R[]> {
  const out = new Map<string, R[]>();
  for (const r of records) {
    const list = out.get(r.deviceId);
    if (list) list.push(r);
    else out.set(r.deviceId, [r]);
  }
  return out;
}

export function viewDevice(d: DeviceRecord, grants: GrantRecord[], tokens: TokenRecord[], connected: boolean): DeviceView {
  const mine = grants.filter((g) => g.deviceId === d.deviceId);
  return {
    deviceId: d.deviceId,
    publicKey: d.publicKey,
    displayName: d.displayName ?? null,
    label: d.label ?? null,
    platform: d.platform ?? null,
    deviceFamily: d.deviceFamily ?? null,
    clientId: d.clientId ?? null,
    clientMode: d.clientMode ?? null,
    roles: mine.map((g) => g.role).sort(),
    scopes: normalizeScopes(mine.flatMap((g) => g.scopes)),
    grants: mine.map((g) => ({
      role: g.role,
      scopes: g.scopes,
      approvedAtMs: g.approvedAtMs,
      approvedVia: g.approvedVia,
      epoch: g.epoch,
      ...grantExtras(g),
      ...(g.expiresAtMs != null ? { scopesAfterExpiry: g.scopesAfterExpiry ?? [] } : {}),
    })),
    tokens: tokens
      .filter((t) => t.deviceId === d.deviceId)
      .map((t) => ({
        role: t.role,
        tokenId: t.tokenId,
        createdAtMs: t.createdAtMs,
        ...(t.rotatedAtMs !== undefined ? { rotatedAtMs: t.rotatedAtMs } : {}),
        ...(t.revokedAtMs !== undefined ? { revokedAtMs: t.revokedAtMs } : {}),
        ...(t.lastUsedAtMs !== undefined ? { lastUsedAtMs: t.lastUsedAtMs } : {}),
      })),
    createdAtMs: d.createdAtMs,
    lastSeenAtMs: d.lastSeenAtMs ?? null,
    remoteIp: d.lastSeenAddress ?? null,
    connected,
  };
}

export function viewPending(r: PairingRequest, grant: GrantRecord | null, ttlMs: number): PendingView {
  return {
    requestId: r.requestId,
    deviceId: r.deviceId,
    publicKey: r.publicKey,
    displayName: r.meta.displayName ?? null,
    platform: r.meta.platform ?? null,
    deviceFamily: r.meta.deviceFamily ?? null,
    clientId: r.meta.clientId ?? null,
    clientMode: r.meta.clientMode ?? null,
    role: r.role,
    roles: [r.role],
    scopes: r.scopes,
    adds: grant ? uncoveredScopes(grant.scopes, r.scopes) : r.scopes,
    approvedScopes: grant ? grant.scopes : null,
    kind: r.kind,
    remoteIp: r.address,
    silent: false,
    isRepair: r.isRepair,
    createdAtMs: r.createdAtMs,
    ts: r.refreshedAtMs,
    widenedAtMs: r.widenedAtMs ?? null,
    expiresAtMs: r.refreshedAtMs + ttlMs,
    confirmationCode: confirmationCode(r),
  };
}

/** What these methods use of the gateway (nothing else reaches them). */
export type DeviceMethodDeps = Pick<
  Gateway,
  | 'methods'
  | 'store'
  | 'clock'
  | 'random'
  | 'config'
  | 'broadcast'
  | 'connectedDeviceIds'
  | 'expirePending'
  | 'approveRequest'
  | 'quorum'
  | 'rejectRequest'
  | 'closeDeviceSessions'
  | 'pushRotatedToken'
  | 'publishTokenRetired'
  | 'sessionElsewhere'
>;

export function registerDeviceMethods(gw: DeviceMethodDeps): void {
  const ttl = () => gw.config.pendingTtlMs;

  async function currentPending(deviceId?: string) {
    await gw.expirePending();
    return gw.store.listPairingRequests(deviceId);
  }

  /**
   * One pending request by id, as `currentPending` would list it, in one indexed read instead of
   * two reads of every pending request (approval latency and cost stay flat with the backlog):
   * a request past its TTL is expired first and is then unknown.
   */
  async function pendingById(requestId: string): Promise<PairingRequest | null> {
    const r = await gw.store.getPairingRequest(requestId);
    if (r && r.refreshedAtMs < gw.clock.now() - ttl()) {
      await gw.expirePending();
      return null;
    }
    return r;
  }

  /** The device's grant for a role, or the error that says which of device and role is missing. */
  async function grantOrError(deviceId: string, role: Role): Promise<GrantRecord | GatewayError> {
    const grant = await gw.store.getGrant(deviceId, role);
    if (grant) return grant;
    if (!(await gw.store.getDevice(deviceId))) return new GatewayError('UNKNOWN_DEVICE', { vars: { deviceId } });
    return new GatewayError('ROLE_NOT_GRANTED', { vars: { deviceId, role } });
  }

  async function unknownRequest(requestId: string, deviceId?: string) {
    const pending = await currentPending(deviceId);
    return new GatewayError('UNKNOWN_REQUEST_ID', {
      vars: { requestId },
      details: { requestId, pending: pending.map((r) => ({ requestId: r.requestId, deviceId: r.deviceId, role: r.role, kind: r.kind, scopes: r.scopes })) },
    });
  }

  gw.methods.add({
    name: 'device.pair.list',
    role: 'operator',
    scope: PAIRING,
    // No params: every device at once (what `openclaw devices list` expects). Any of limit, cursor
    // or search: one page of devices and the cursor of the next (null on the last page).
    params: T.Object(
      {
        limit: T.Optional(T.Integer({ minimum: 1, maximum: DEVICE_PAGE_MAX })),
        cursor: T.Optional(T.String({ minLength: 1, maxLength: 512 })),
        search: T.Optional(T.String({ minLength: 1, maxLength: DEVICE_SEARCH_MAX_CHARS })),
      },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params }) => {
      const p = params as { limit?: number; cursor?: string; search?: string };
      const paged = p.limit !== undefined || p.cursor !== undefined || p.search !== undefined;
      if (paged) {
        const unsafe = unsafeFieldError('device.pair.list', { search: p.search });
        if (unsafe) return unsafe;
      }
      // Non-admin device sessions see only their own device (no enumeration of others).
      const ownOnly = !isAdmin(principal) && principal.kind === 'device';
      const own = (id: string) => !ownOnly || principal.deviceId === id;
      let devices: DeviceRecord[];
      let nextCursor: string | null = null;
      if (!paged) devices = await gw.store.listDevices();
      else if (ownOnly) {
        // One device at most: answered whole on the first page, whatever the limit.
        const mine = p.cursor === undefined ? await gw.store.getDevice(principal.deviceId as string) : null;
        devices = mine && deviceMatchesSearch(mine, p.search) ? [mine] : [];
      } else {
        const page = await gw.store.listDevicesPage({ limit: p.limit ?? DEVICE_PAGE_DEFAULT, cursor: p.cursor, search: p.search });
        if (!page.ok) {
          const problem =
            page.reason === 'bad-cursor' ? 'cursor is not one this gateway issued (list again without it)' : `limit must be 1 to ${DEVICE_PAGE_MAX}`;
          return new GatewayError('INVALID_PARAMS', { vars: { method: 'device.pair.list', problem } });
        }
        devices = page.devices;
        nextCursor = page.nextCursor;
      }
      devices = devices.filter((d) => own(d.deviceId));
      // A page reads the grants and tokens of its own devices only; the whole list reads them in one go.
      const [pending, grants, tokens, connected, surfaces, surfaceRequests] = await Promise.all([
        currentPending(),
        paged ? Promise.all(devices.map((d) => gw.store.listGrants(d.deviceId))).then((g) => g.flat()) : gw.store.listGrants(),
        paged ? Promise.all(devices.map((d) => gw.store.listTokens(d.deviceId))).then((t) => t.flat()) : gw.store.listTokens(),
        gw.connectedDeviceIds(),
        paged
          ? Promise.all(devices.map((d) => gw.store.getNodeSurface(d.deviceId))).then((s) => s.filter((x): x is NodeSurfaceRecord => x !== null))
          : gw.store.listNodeSurfaces(),
        gw.store.listNodeSurfaceRequests(),
      ]);
      const grantOf = (r: PairingRequest) => grants.find((g) => g.deviceId === r.deviceId && g.role === r.role) ?? null;
      // Indexed once: one pass over the devices, not a scan of every list per device.
      const grantsOf = groupByDevice(grants);
      const tokensOf = groupByDevice(tokens);
      const surfaceOf = byDevice(surfaces);
      const requestOf = byDevice(surfaceRequests);
      // A page's grants are those of its devices: a pending request of another device reads its grant itself.
      const pendingGrant = async (r: PairingRequest) => (paged && !grantsOf.has(r.deviceId) ? gw.store.getGrant(r.deviceId, r.role) : grantOf(r));
      const ownPending = pending.filter((r) => own(r.deviceId));
      const pendingGrants = await Promise.all(ownPending.map(pendingGrant));
      return {
        pending: await Promise.all(
          ownPending.map(async (r, i) => {
            const grant = pendingGrants[i] ?? null;
            return { ...viewPending(r, grant, ttl()), approvals: (await deviceRequestState(gw, r, grant)).approvals };
          }),
        ),
        paired: devices.map((d) => {
          const mine = grantsOf.get(d.deviceId) ?? [];
          return {
            ...viewDevice(d, mine, tokensOf.get(d.deviceId) ?? [], connected.has(d.deviceId)),
            ...viewNodeSurfaces(mine, surfaceOf.get(d.deviceId), requestOf.get(d.deviceId)),
          };
        }),
        ...(paged ? { nextCursor } : {}),
      };
    },
  });

  gw.methods.add({
    name: 'device.pair.approve',
    role: 'operator',
    scope: PAIRING,
    params: T.Object(
      { requestId: T.Optional(RequestId), deviceId: T.Optional(DeviceId), ttl: T.Optional(T.String({ maxLength: 32 })) },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params }) => {
      const p = params as { requestId?: string; deviceId?: string; ttl?: string };
      if (!p.requestId && !p.deviceId)
        return new GatewayError('INVALID_PARAMS', { vars: { method: 'device.pair.approve', problem: 'pass requestId or deviceId' } });
      // A time-bound approval: the added scopes (or the new role) end after `ttl` (docs/approvals.md).
      const ttlMs = p.ttl === undefined ? null : parseDuration(p.ttl);
      if (p.ttl !== undefined && ttlMs === null)
        return new GatewayError('INVALID_PARAMS', {
          vars: { method: 'device.pair.approve', problem: 'ttl must be a duration like "8h", "30m" or "7d" (1s to 366d)' },
        });
      let requests: PairingRequest[];
      if (p.requestId) {
        const r = await pendingById(p.requestId);
        if (!r || (p.deviceId && r.deviceId !== p.deviceId)) return unknownRequest(p.requestId, p.deviceId);
        requests = [r];
      } else {
        requests = await currentPending(p.deviceId);
        if (requests.length === 0) {
          const known = await gw.store.getDevice(p.deviceId as string);
          if (!known) return new GatewayError('UNKNOWN_DEVICE', { vars: { deviceId: p.deviceId as string } });
          return unknownRequest(`(any for ${p.deviceId})`, p.deviceId);
        }
      }
      for (const r of requests) {
        const why = approvalDenial(principal, r);
        if (why) return new GatewayError('APPROVAL_DENIED', { vars: { why }, details: { requestId: r.requestId, deviceId: r.deviceId } });
      }
      const approved = [];
      // Requests under quorum record this approval and wait for the rest (core/approval-flow.ts).
      const awaiting = [];
      for (const r of requests) {
        // Read once for the quorum check and the approval (one round trip less on every approval).
        const grant = await gw.store.getGrant(r.deviceId, r.role);
        const vote = await voteOnDeviceRequest(gw.quorum, r, principal, ttlMs, grant);
        if (vote instanceof GatewayError) return vote;
        // The approval that completes a quorum sets the ttl (earlier votes only count); a vote
        // recorded on the way may have taken a while, so the approval then reads the grant again.
        if (vote.done)
          approved.push(
            await gw.approveRequest(r, principal, vote.approvals ? { approvals: vote.approvals } : undefined, { ttlMs, ...(vote.approvals ? {} : { grant }) }),
          );
        else awaiting.push({ requestId: r.requestId, deviceId: r.deviceId, role: r.role, approvals: vote.approvals });
      }
      const first = approved[0] ?? awaiting[0];
      return {
        requestId: first?.requestId,
        deviceId: first?.deviceId,
        approved,
        ...(awaiting.length > 0 ? { awaiting } : {}),
        device: approved[0]?.device,
      };
    },
  });

  gw.methods.add({
    name: 'device.pair.reject',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ requestId: RequestId }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const { requestId } = params as { requestId: string };
      const r = await gw.store.getPairingRequest(requestId);
      if (!r) return unknownRequest(requestId);
      const why = rejectionDenial(principal, r);
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'device pairing rejection', why } });
      // Any approver's rejection ends a request under quorum; the event says how far it had got.
      const { approvals } = await deviceRequestState(gw, r);
      await gw.rejectRequest(r, principal, approvals.required > 1 ? { approvals } : undefined);
      return { requestId, deviceId: r.deviceId };
    },
  });

  gw.methods.add({
    name: 'device.pair.remove',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ deviceId: DeviceId }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const { deviceId } = params as { deviceId: string };
      const grants = await gw.store.listGrants(deviceId);
      const why = deviceManagementDenial(principal, 'remove', deviceId, grants);
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'device removal', why } });
      const removedAtMs = gw.clock.now();
      const ok = await gw.store.removeDevice(deviceId, { atMs: removedAtMs, actor: principal.actor, action: 'device.removed', subject: deviceId });
      if (!ok) return new GatewayError('UNKNOWN_DEVICE', { vars: { deviceId } });
      gw.closeDeviceSessions(deviceId, null, 'DEVICE_REMOVED', principal, removedAtMs);
      gw.broadcast('device.pair.changed', { deviceId, change: 'removed' });
      return { deviceId };
    },
  });

  gw.methods.add({
    name: 'device.pair.rename',
    role: 'operator',
    scope: PAIRING,
    params: T.Object(
      { deviceId: DeviceId, label: T.Optional(T.String({ maxLength: 256 })), name: T.Optional(T.String({ maxLength: 256 })) },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params }) => {
      const p = params as { deviceId: string; label?: string; name?: string };
      const label = (p.label ?? p.name ?? '').trim();
      if (label.length < 1 || label.length > 64) {
        return new GatewayError('INVALID_PARAMS', { vars: { method: 'device.pair.rename', problem: 'label must be 1 to 64 characters' } });
      }
      const unsafe = unsafeFieldError('device.pair.rename', { [p.label !== undefined ? 'label' : 'name']: label });
      if (unsafe) return unsafe;
      const why = deviceManagementDenial(principal, 'rename', p.deviceId, await gw.store.listGrants(p.deviceId));
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'device rename', why } });
      const ok = await gw.store.renameDevice(p.deviceId, label, {
        atMs: gw.clock.now(),
        actor: principal.actor,
        action: 'device.renamed',
        subject: p.deviceId,
        data: { label },
      });
      if (!ok) return new GatewayError('UNKNOWN_DEVICE', { vars: { deviceId: p.deviceId } });
      gw.broadcast('device.pair.changed', { deviceId: p.deviceId, change: 'renamed', label });
      return { deviceId: p.deviceId, label };
    },
  });

  gw.methods.add({
    name: 'device.token.rotate',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ deviceId: DeviceId, role: RoleSchema, scopes: T.Optional(Scopes) }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const p = params as { deviceId: string; role: Role; scopes?: string[] };
      const grant = await grantOrError(p.deviceId, p.role);
      if (grant instanceof GatewayError) return grant;
      const scopes = p.scopes ? normalizeScopes(p.scopes) : null;
      const why = tokenDenial(principal, 'rotate', p.deviceId, p.role, scopes, grant);
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'device token rotation', why } });
      const now = gw.clock.now();
      // Only the device itself (it proved its key on this socket) receives the new bearer in-band.
      // For anyone else the old token is retired; the device's live sessions of that role (each
      // proved the device key on its handshake) get the successor pushed by the instance holding
      // them, and an offline device gets one on its next connect with another credential: the
      // new secret never crosses to a different party.
      // (A pushed successor gets its own `token.issued` audit entry from the instance that mints it.)
      const inBand = principal.kind === 'device' && principal.deviceId === p.deviceId;
      // Asked before the retirement: the instance holding the socket withdraws it once it has pushed.
      const elsewhere = inBand ? false : await gw.sessionElsewhere(p.deviceId, p.role).catch(() => false);
      const minted = inBand ? mintToken('device', gw.random) : null;
      const next = await gw.store.rotateToken(p.deviceId, p.role, minted ? { tokenId: minted.id, secretHash: minted.secretHash } : null, scopes, now, {
        atMs: now,
        actor: principal.actor,
        action: 'token.rotated',
        subject: p.deviceId,
        data: { role: p.role, tokenId: minted?.id ?? null, scopes: scopes ?? grant.scopes, delivery: inBand ? 'in-band' : 'cross-device' },
      });
      if (!next) return new GatewayError('ROLE_NOT_GRANTED', { vars: { deviceId: p.deviceId, role: p.role } });
      const base = { deviceId: p.deviceId, role: p.role, scopes: next.scopes, rotatedAtMs: now };
      gw.broadcast('device.pair.changed', { deviceId: p.deviceId, change: 'token-rotated', role: p.role });
      if (minted) {
        gw.closeDeviceSessions(p.deviceId, p.role, 'TOKEN_ROTATED', principal);
        return { ...base, tokenDelivery: 'in-band', token: minted.token, tokenId: minted.id };
      }
      gw.publishTokenRetired(p.deviceId, p.role);
      const pushed = await gw.pushRotatedToken(p.deviceId, p.role);
      return { ...base, tokenDelivery: pushed > 0 || elsewhere ? 'pushed-live' : 'withheld-cross-device' };
    },
  });

  gw.methods.add({
    name: 'device.token.revoke',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ deviceId: DeviceId, role: RoleSchema }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const p = params as { deviceId: string; role: Role };
      const grant = await grantOrError(p.deviceId, p.role);
      if (grant instanceof GatewayError) return grant;
      const why = tokenDenial(principal, 'revoke', p.deviceId, p.role, null, grant);
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'device token revocation', why } });
      const now = gw.clock.now();
      await gw.store.revokeToken(p.deviceId, p.role, now, {
        atMs: now,
        actor: principal.actor,
        action: 'token.revoked',
        subject: p.deviceId,
        data: { role: p.role },
      });
      gw.closeDeviceSessions(p.deviceId, p.role, 'TOKEN_REVOKED', principal, now);
      gw.broadcast('device.pair.changed', { deviceId: p.deviceId, change: 'token-revoked', role: p.role });
      return { deviceId: p.deviceId, role: p.role, revokedAtMs: now };
    },
  });

  gw.methods.add({
    name: 'audit.list',
    role: 'operator',
    scope: ADMIN,
    params: T.Object(
      { afterSeq: T.Optional(T.Integer({ minimum: 0 })), limit: T.Optional(T.Integer({ minimum: 1, maximum: 10_000 })) },
      { additionalProperties: false },
    ),
    handler: async ({ params }) => {
      const p = params as { afterSeq?: number; limit?: number };
      const entries: AuditEntryView[] = await gw.store.listAudit({ afterSeq: p.afterSeq ?? 0, limit: p.limit ?? 1000 });
      return { entries };
    },
  });
}

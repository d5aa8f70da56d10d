/** In-memory store for unit tests. Same contract as SQLite; nothing survives the process. */
import type { Role } from '../protocol/frames.js';
import { mergeNodeSurfaceRequest } from './nodes-shared.js';
import { checkRedemption, redeemedGrantScopes } from './setup-shared.js';
import { chainAudit, mergePairingRequest } from './shared.js';
import type {
  ApproveInput,
  AuditEntry,
  AuditInput,
  DeviceRecord,
  GrantRecord,
  NewSetupCode,
  NewToken,
  NodeSurfaceRecord,
  NodeSurfaceRequest,
  PairingRequest,
  RedeemSetupInput,
  RedeemSetupResult,
  SetupCodeRecord,
  Store,
  TokenRecord,
  UpsertNodeSurfaceInput,
  UpsertRequestInput,
  UpsertRequestResult,
} from './types.js';

const gk = (deviceId: string, role: Role) => `${deviceId}\u0000${role}`;
const clone = <T>(v: T): T => structuredClone(v);
/** structuredClone turns a Buffer into a plain Uint8Array; token hashes must stay Buffers. */
const cloneToken = (t: TokenRecord): TokenRecord => ({ ...t, secretHash: Buffer.from(t.secretHash) });
const cloneSetup = (c: SetupCodeRecord): SetupCodeRecord => {
  const { secretHash, ...rest } = c;
  return { ...structuredClone(rest), secretHash: Buffer.from(secretHash) };
};

export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  private meta = new Map<string, string>();
  private devices = new Map<string, DeviceRecord>();
  private grants = new Map<string, GrantRecord>();
  private tokens = new Map<string, TokenRecord>();
  private requests = new Map<string, PairingRequest>();
  private audit: AuditEntry[] = [];
  private setups = new Map<string, SetupCodeRecord>();
  private nodeSurfaces = new Map<string, NodeSurfaceRecord>();
  private nodeRequests = new Map<string, NodeSurfaceRequest>();

  async close(): Promise<void> {}

  async getMeta(key: string) {
    return this.meta.get(key) ?? null;
  }
  async setMeta(key: string, value: string) {
    this.meta.set(key, value);
  }

  async getDevice(deviceId: string) {
    const d = this.devices.get(deviceId);
    return d ? clone(d) : null;
  }
  async listDevices() {
    return [...this.devices.values()].map(clone).sort((a, b) => a.createdAtMs - b.createdAtMs);
  }
  async listGrants(deviceId?: string) {
    return [...this.grants.values()].filter((g) => !deviceId || g.deviceId === deviceId).map(clone);
  }
  async getGrant(deviceId: string, role: Role) {
    const g = this.grants.get(gk(deviceId, role));
    return g ? clone(g) : null;
  }
  async getToken(tokenId: string) {
    const t = this.tokens.get(tokenId);
    return t ? cloneToken(t) : null;
  }
  async listTokens(deviceId?: string) {
    return [...this.tokens.values()].filter((t) => !deviceId || t.deviceId === deviceId).map(cloneToken);
  }

  private liveToken(deviceId: string, role: Role): TokenRecord | undefined {
    for (const t of this.tokens.values()) if (t.deviceId === deviceId && t.role === role && t.revokedAtMs === undefined) return t;
    return undefined;
  }
  private dropTokens(deviceId: string, role?: Role) {
    for (const [id, t] of this.tokens) if (t.deviceId === deviceId && (!role || t.role === role)) this.tokens.delete(id);
  }
  private putToken(deviceId: string, role: Role, token: NewToken, atMs: number, createdAtMs?: number) {
    this.dropTokens(deviceId, role);
    this.tokens.set(token.tokenId, {
      tokenId: token.tokenId,
      deviceId,
      role,
      secretHash: Buffer.from(token.secretHash),
      createdAtMs: createdAtMs ?? atMs,
      rotatedAtMs: createdAtMs === undefined ? undefined : atMs,
    });
  }
  /**
   * Build the next audit entry without appending it. Each action prepares its entry before it
   * changes anything and commits it after, so an entry that cannot be built (e.g. data that
   * does not serialize) leaves the store untouched, as the SQLite transaction would.
   */
  private prepareAudit(input: AuditInput): AuditEntry {
    return chainAudit(this.audit[this.audit.length - 1], input);
  }
  private commitAudit(e: AuditEntry): AuditEntry {
    this.audit.push(e);
    return e;
  }

  /** The device row after an approval: presented meta replaces the old (as in SQLite); label and creation time stay. */
  private deviceRow(device: ApproveInput['device'], atMs: number): DeviceRecord {
    const existing = this.devices.get(device.deviceId);
    return {
      ...clone(device.meta),
      deviceId: device.deviceId,
      publicKey: device.publicKey,
      label: existing?.label,
      createdAtMs: existing?.createdAtMs ?? atMs,
      lastSeenAtMs: atMs,
      lastSeenAddress: device.address ?? existing?.lastSeenAddress,
    };
  }

  async approve(input: ApproveInput): Promise<GrantRecord> {
    const { device, role, atMs } = input;
    const entry = this.prepareAudit(input.audit);
    const row = this.deviceRow(device, atMs);
    const prev = this.grants.get(gk(device.deviceId, role));
    const grant: GrantRecord = {
      deviceId: device.deviceId,
      role,
      scopes: [...input.scopes],
      epoch: (prev?.epoch ?? 0) + 1,
      approvedAtMs: atMs,
      approvedVia: input.via,
    };
    const old = this.liveToken(device.deviceId, role);
    this.devices.set(device.deviceId, row);
    this.grants.set(gk(device.deviceId, role), grant);
    if (input.token) this.putToken(device.deviceId, role, input.token, atMs, old?.createdAtMs);
    if (input.requestId) this.requests.delete(input.requestId);
    this.commitAudit(entry);
    return clone(grant);
  }

  async upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult> {
    const existing = [...this.requests.values()].find((r) => r.deviceId === input.deviceId && r.role === input.role) ?? null;
    const result = mergePairingRequest(existing, input);
    const entry = result.created || result.widened ? this.prepareAudit(input.audit) : null;
    // Store a copy: the merged request shares objects (meta, scopes) with the caller's input.
    this.requests.set(result.request.requestId, clone(result.request));
    if (entry) this.commitAudit(entry);
    return clone(result);
  }
  async getPairingRequest(requestId: string) {
    const r = this.requests.get(requestId);
    return r ? clone(r) : null;
  }
  async listPairingRequests(deviceId?: string) {
    return [...this.requests.values()]
      .filter((r) => !deviceId || r.deviceId === deviceId)
      .map(clone)
      .sort((a, b) => a.createdAtMs - b.createdAtMs);
  }
  async deletePairingRequest(requestId: string, audit: AuditInput) {
    if (!this.requests.has(requestId)) return false;
    const entry = this.prepareAudit(audit);
    this.requests.delete(requestId);
    this.commitAudit(entry);
    return true;
  }

  async rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput) {
    const g = this.grants.get(gk(deviceId, role));
    if (!g) return null;
    const entry = this.prepareAudit(audit);
    const old = this.liveToken(deviceId, role);
    g.epoch++;
    if (scopes) g.scopes = [...scopes];
    if (token) this.putToken(deviceId, role, token, atMs, old?.createdAtMs ?? atMs);
    else this.dropTokens(deviceId, role);
    this.commitAudit(entry);
    return clone(g);
  }
  async revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
    if (!this.grants.has(gk(deviceId, role))) return null;
    const entry = this.prepareAudit(audit);
    const t = this.liveToken(deviceId, role);
    this.grants.delete(gk(deviceId, role));
    if (t) t.revokedAtMs = atMs;
    if (role === 'node') this.dropNodeSurface(deviceId);
    this.commitAudit(entry);
    return t ? cloneToken(t) : null;
  }
  async removeRole(deviceId: string, role: Role, audit: AuditInput) {
    if (!this.grants.has(gk(deviceId, role))) return false;
    const entry = this.prepareAudit(audit);
    this.grants.delete(gk(deviceId, role));
    this.dropTokens(deviceId, role);
    for (const [id, r] of this.requests) if (r.deviceId === deviceId && r.role === role) this.requests.delete(id);
    if (role === 'node') this.dropNodeSurface(deviceId);
    if (![...this.grants.values()].some((g) => g.deviceId === deviceId)) {
      // The row goes with its last role, and with it every token (revoked ones too), as the
      // SQLite foreign key cascades.
      this.devices.delete(deviceId);
      this.dropTokens(deviceId);
    }
    this.commitAudit(entry);
    return true;
  }
  async removeDevice(deviceId: string, audit: AuditInput) {
    const any = this.devices.has(deviceId) || [...this.requests.values()].some((r) => r.deviceId === deviceId);
    if (!any) return false;
    const entry = this.prepareAudit(audit);
    this.devices.delete(deviceId);
    for (const [k, g] of this.grants) if (g.deviceId === deviceId) this.grants.delete(k);
    this.dropTokens(deviceId);
    for (const [id, r] of this.requests) if (r.deviceId === deviceId) this.requests.delete(id);
    this.dropNodeSurface(deviceId);
    this.commitAudit(entry);
    return true;
  }
  async renameDevice(deviceId: string, label: string, audit: AuditInput) {
    const d = this.devices.get(deviceId);
    if (!d) return false;
    const entry = this.prepareAudit(audit);
    d.label = label;
    this.commitAudit(entry);
    return true;
  }
  async recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>) {
    for (const e of entries) {
      const d = this.devices.get(e.deviceId);
      if (d) (d.lastSeenAtMs = e.atMs), (d.lastSeenAddress = e.address);
      const t = e.tokenId ? this.tokens.get(e.tokenId) : undefined;
      if (t) t.lastUsedAtMs = e.atMs;
    }
  }
  // --- setup codes ---------------------------------------------------------------------------

  async createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord> {
    if (this.setups.has(input.setupId)) throw new Error(`setup code ${input.setupId} already exists`);
    const entry = this.prepareAudit(input.audit);
    const code: SetupCodeRecord = {
      setupId: input.setupId,
      secretHash: Buffer.from(input.secretHash),
      profile: clone(input.profile),
      label: input.label,
      url: input.url,
      createdAtMs: input.createdAtMs,
      expiresAtMs: input.expiresAtMs,
      createdBy: input.createdBy,
      failures: 0,
      redeemCount: 0,
    };
    this.setups.set(code.setupId, code);
    this.commitAudit(entry);
    return cloneSetup(code);
  }
  async getSetupCode(setupId: string) {
    const c = this.setups.get(setupId);
    return c ? cloneSetup(c) : null;
  }
  async listSetupCodes() {
    return [...this.setups.values()].sort((a, b) => a.createdAtMs - b.createdAtMs).map(cloneSetup);
  }
  async redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult> {
    const { device, atMs } = input;
    const code = this.setups.get(input.setupId) ?? null;
    const check = checkRedemption(code, device, atMs, input.graceMs, (r) => this.grants.get(gk(device.deviceId, r))?.epoch);
    if (!check.ok) return check;
    const c = code as SetupCodeRecord;
    const roles = c.profile.roles;
    for (const r of roles) if (!input.tokens[r]) throw new Error(`redeemSetupCode: no token for role ${r}`);
    const entry = this.prepareAudit(check.repeat ? input.repeatAudit : input.audit);
    const resolved: string[] = [];
    if (check.repeat) {
      c.redeemCount++;
    } else {
      this.devices.set(device.deviceId, this.deviceRow(device, atMs));
      const epochs: Partial<Record<Role, number>> = {};
      for (const r of roles) {
        const prev = this.grants.get(gk(device.deviceId, r));
        const grant: GrantRecord = {
          deviceId: device.deviceId,
          role: r,
          scopes: redeemedGrantScopes(c.profile, r, prev?.scopes),
          epoch: (prev?.epoch ?? 0) + 1,
          approvedAtMs: atMs,
          approvedVia: 'bootstrap',
        };
        this.grants.set(gk(device.deviceId, r), grant);
        epochs[r] = grant.epoch;
      }
      for (const [id, req] of this.requests) {
        if (req.deviceId === device.deviceId && roles.includes(req.role)) {
          this.requests.delete(id);
          resolved.push(id);
        }
      }
      c.redeemedAtMs = atMs;
      c.redeemCount = 1;
      c.deviceId = device.deviceId;
      c.publicKey = device.publicKey;
      c.deviceName = device.meta.displayName;
      c.redeemedRole = input.role;
      c.grantEpochs = epochs;
    }
    for (const r of roles) this.putToken(device.deviceId, r, input.tokens[r] as NewToken, atMs);
    this.commitAudit(entry);
    const grants = roles.map((r) => clone(this.grants.get(gk(device.deviceId, r)) as GrantRecord));
    return { ok: true, repeat: check.repeat, code: cloneSetup(c), grants, resolvedRequestIds: resolved };
  }
  async recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput) {
    const c = this.setups.get(setupId);
    if (!c) return null;
    const burns = c.burnedAtMs === undefined && c.failures + 1 >= budget;
    const entry = burns ? this.prepareAudit(burnAudit) : null;
    c.failures++;
    if (burns) c.burnedAtMs = atMs;
    if (entry) this.commitAudit(entry);
    return { failures: c.failures, burned: burns };
  }
  async revokeSetupCode(setupId: string, atMs: number, audit: AuditInput) {
    const c = this.setups.get(setupId);
    if (!c) return null;
    if (c.revokedAtMs !== undefined || c.burnedAtMs !== undefined) return { code: cloneSetup(c), changed: false };
    const entry = this.prepareAudit(audit);
    c.revokedAtMs = atMs;
    this.commitAudit(entry);
    return { code: cloneSetup(c), changed: true };
  }

  // --- nodes: command surfaces (issue 5) -----------------------------------------------------
  /** The surface lives with the node role (SQLite does this with a trigger on grants). */
  private dropNodeSurface(deviceId: string) {
    this.nodeSurfaces.delete(deviceId);
    for (const [id, r] of this.nodeRequests) if (r.deviceId === deviceId) this.nodeRequests.delete(id);
  }
  async getNodeSurface(deviceId: string) {
    const s = this.nodeSurfaces.get(deviceId);
    return s ? clone(s) : null;
  }
  async listNodeSurfaces() {
    return [...this.nodeSurfaces.values()].map(clone);
  }
  async upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput) {
    const existing = [...this.nodeRequests.values()].find((r) => r.deviceId === input.deviceId);
    const res = mergeNodeSurfaceRequest(existing, input);
    const entry = res.created ? this.prepareAudit(input.audit) : null;
    if (existing) this.nodeRequests.delete(existing.requestId);
    this.nodeRequests.set(res.request.requestId, clone(res.request));
    if (entry) this.commitAudit(entry);
    return { ...res, request: clone(res.request) };
  }
  async getNodeSurfaceRequest(requestId: string) {
    const r = this.nodeRequests.get(requestId);
    return r ? clone(r) : null;
  }
  async listNodeSurfaceRequests() {
    return [...this.nodeRequests.values()].map(clone).sort((a, b) => a.createdAtMs - b.createdAtMs);
  }
  async approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput) {
    const r = this.nodeRequests.get(requestId);
    if (!r) return null;
    const entry = this.prepareAudit(audit);
    const surface: NodeSurfaceRecord = { deviceId: r.deviceId, caps: [...r.caps], commands: [...r.commands], requestId, approvedAtMs: atMs, approvedBy };
    this.nodeRequests.delete(requestId);
    this.nodeSurfaces.set(r.deviceId, surface);
    this.commitAudit(entry);
    return clone(surface);
  }
  async deleteNodeSurfaceRequest(requestId: string, audit: AuditInput) {
    if (!this.nodeRequests.has(requestId)) return false;
    const entry = this.prepareAudit(audit);
    this.nodeRequests.delete(requestId);
    this.commitAudit(entry);
    return true;
  }

  async appendAudit(input: AuditInput) {
    return clone(this.commitAudit(this.prepareAudit(input)));
  }
  async listAudit(opts: { afterSeq?: number; limit?: number } = {}) {
    const after = opts.afterSeq ?? 0;
    return this.audit
      .filter((e) => e.seq > after)
      .slice(0, opts.limit ?? Number.MAX_SAFE_INTEGER)
      .map(clone);
  }
}

/** In-memory store for unit tests. Same contract as SQLite; nothing survives the process. */
import type { Role } from '../protocol/frames.js';
import { type ExistingDevice, otherDeviceCount, planDeviceImport } from './import-shared.js';
import { mergeNodeSurfaceRequest } from './nodes-shared.js';
import { SIGN_IN_LINK_META_PREFIX, signInLinkPrunable } from './retention-shared.js';
import { checkRedemption, failureBurns, redeemedGrantScopes, redeemedRoles } from './setup-shared.js';
import { applyAttempt, approvedGrant, CHAT_PAGE_DEFAULT, chainAudit, channelNameTaken, grantAfterExpiry, mergePairingRequest } from './shared.js';
import type {
  AppendMessageResult,
  ApproveInput,
  AuditEntry,
  AuditInput,
  ChatMessage,
  ChatSession,
  CronJob,
  CronJobPatch,
  CronRun,
  Delivery,
  DeliveryAttempt,
  DeliveryStatus,
  DeviceRecord,
  GrantRecord,
  ImportDevicesInput,
  ImportDevicesResult,
  NewChannel,
  NewChatMessage,
  NewChatSession,
  NewCronJob,
  NewDelivery,
  NewSetupCode,
  NewToken,
  NodeSurfaceRecord,
  NodeSurfaceRequest,
  PairingRequest,
  PruneCounts,
  RedeemSetupInput,
  RedeemSetupResult,
  RetentionCutoffs,
  SetupCodeRecord,
  Store,
  TokenRecord,
  UpsertNodeSurfaceInput,
  UpsertRequestInput,
  UpsertRequestResult,
  WebhookChannel,
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
  // automations
  private chatSessions = new Map<string, ChatSession>();
  private chatMessages = new Map<string, ChatMessage[]>();
  private channels = new Map<string, WebhookChannel>();
  private deliveries = new Map<string, Delivery>();
  private cronJobs = new Map<string, CronJob>();
  private cronRuns: CronRun[] = [];

  async close(): Promise<void> {}

  async getMeta(key: string) {
    return this.meta.get(key) ?? null;
  }
  async setMeta(key: string, value: string) {
    this.meta.set(key, value);
  }
  async setMetaIf(key: string, expected: string | null, value: string) {
    if ((this.meta.get(key) ?? null) !== expected) return false;
    this.meta.set(key, value);
    return true;
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
    // After the caller finished its (synchronous) commit, as the SQL adapters call after COMMIT.
    // One call per action, however many entries it appended.
    if (this.auditListeners.length > 0 && !this.auditNotifyQueued) {
      this.auditNotifyQueued = true;
      queueMicrotask(() => {
        this.auditNotifyQueued = false;
        for (const l of this.auditListeners) l();
      });
    }
    return e;
  }
  private readonly auditListeners: Array<() => void> = [];
  private auditNotifyQueued = false;
  onAuditAppended(listener: () => void): void {
    this.auditListeners.push(listener);
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
    const grant = approvedGrant(input, prev?.epoch);
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
  // --- token rotation pushed to live sessions (issues 5/9) ---
  async issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput) {
    const g = this.grants.get(gk(deviceId, role));
    if (!g || this.liveToken(deviceId, role)) return null;
    const entry = this.prepareAudit(audit);
    this.putToken(deviceId, role, token, atMs);
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
  async expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
    const g = this.grants.get(gk(deviceId, role));
    if (!g || g.expiresAtMs == null || g.expiresAtMs > atMs) return null;
    const entry = this.prepareAudit(audit);
    const next = grantAfterExpiry(g);
    if (next) this.grants.set(gk(deviceId, role), next);
    else {
      this.grants.delete(gk(deviceId, role));
      const t = this.liveToken(deviceId, role);
      if (t) t.revokedAtMs = atMs;
      if (role === 'node') this.dropNodeSurface(deviceId);
    }
    this.commitAudit(entry);
    return next ? { outcome: 'narrowed' as const, grant: clone(next) } : { outcome: 'removed' as const, grant: clone(g) };
  }
  async extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput) {
    const g = this.grants.get(gk(deviceId, role));
    if (!g || g.expiresAtMs == null) return null;
    const entry = this.prepareAudit(audit);
    g.expiresAtMs = expiresAtMs;
    this.commitAudit(entry);
    return clone(g);
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
    const roles = redeemedRoles(c, input.tokens);
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
    const burns = failureBurns(c, budget);
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

  // --- nodes: command surfaces -----------------------------------------------------
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

  // --- automations -------------------------------------------------------------------

  private findSession(idOrKey: string): ChatSession | undefined {
    return this.chatSessions.get(idOrKey) ?? [...this.chatSessions.values()].find((s) => s.key === idOrKey);
  }
  async createChatSession(input: NewChatSession) {
    if ([...this.chatSessions.values()].some((s) => s.key === input.key)) return { ok: false as const, reason: 'key-taken' as const };
    const { audit, ...rest } = input;
    const session: ChatSession = { ...rest, updatedAtMs: input.createdAtMs, messageCount: 0 };
    this.chatSessions.set(session.sessionId, session);
    this.chatMessages.set(session.sessionId, []);
    this.commitAudit(this.prepareAudit(audit));
    return { ok: true as const, session: clone(session) };
  }
  async getChatSession(idOrKey: string) {
    const s = this.findSession(idOrKey);
    return s ? clone(s) : null;
  }
  async listChatSessions(opts: { parentId?: string; limit?: number } = {}) {
    return [...this.chatSessions.values()]
      .filter((s) => opts.parentId === undefined || s.parentId === opts.parentId)
      .sort((a, b) => b.updatedAtMs - a.updatedAtMs || b.createdAtMs - a.createdAtMs)
      .slice(0, opts.limit ?? Number.MAX_SAFE_INTEGER)
      .map(clone);
  }
  async appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult> {
    const session = this.chatSessions.get(input.sessionId);
    const list = this.chatMessages.get(input.sessionId);
    if (!session || !list) return { ok: false, reason: 'unknown-session' };
    if (input.idempotencyKey !== undefined) {
      const prior = list.find((m) => m.idempotencyKey === input.idempotencyKey);
      if (prior) return { ok: true, message: clone(prior), duplicate: true };
    }
    const { audit, ...rest } = input;
    const message: ChatMessage = { ...rest, seq: list.length + 1 };
    list.push(message);
    session.messageCount = list.length;
    session.updatedAtMs = Math.max(session.updatedAtMs, input.atMs);
    this.commitAudit(this.prepareAudit(audit));
    return { ok: true, message: clone(message), duplicate: false };
  }
  async listChatMessages(sessionId: string, opts: { beforeSeq?: number; afterSeq?: number; limit?: number } = {}) {
    const list = this.chatMessages.get(sessionId) ?? [];
    const limit = opts.limit ?? CHAT_PAGE_DEFAULT;
    if (opts.afterSeq !== undefined)
      return list
        .filter((m) => m.seq > (opts.afterSeq as number))
        .slice(0, limit)
        .map(clone);
    const before = list.filter((m) => opts.beforeSeq === undefined || m.seq < opts.beforeSeq);
    return before.slice(Math.max(0, before.length - limit)).map(clone);
  }

  private findChannel(idOrName: string): WebhookChannel | undefined {
    return this.channels.get(idOrName) ?? [...this.channels.values()].find((c) => c.name === idOrName);
  }
  async putChannel(input: NewChannel) {
    const existing = [...this.channels.values()].find((c) => c.name === input.name);
    if (channelNameTaken(existing, input)) return { ok: false as const, reason: 'name-taken' as const };
    const { audit, ...rest } = input;
    const channel: WebhookChannel = existing ? { ...existing, url: input.url, username: input.username } : { ...rest, type: 'webhook' };
    this.channels.set(channel.channelId, channel);
    this.commitAudit(this.prepareAudit(audit));
    return { ok: true as const, channel: clone(channel), created: !existing };
  }
  async getChannel(idOrName: string) {
    const c = this.findChannel(idOrName);
    return c ? clone(c) : null;
  }
  async listChannels() {
    return [...this.channels.values()].sort((a, b) => a.name.localeCompare(b.name)).map(clone);
  }
  async removeChannel(idOrName: string, audit: AuditInput) {
    const c = this.findChannel(idOrName);
    if (!c) return false;
    this.channels.delete(c.channelId);
    this.commitAudit(this.prepareAudit(audit));
    return true;
  }

  async enqueueDelivery(input: NewDelivery) {
    const prior = [...this.deliveries.values()].find((d) => d.channelId === input.channelId && d.idempotencyKey === input.idempotencyKey);
    if (prior) return { delivery: clone(prior), duplicate: true };
    const { audit, ...rest } = input;
    const d: Delivery = { ...rest, status: 'pending', attempts: 0, nextAttemptAtMs: input.createdAtMs };
    this.deliveries.set(d.deliveryId, d);
    this.commitAudit(this.prepareAudit(audit));
    return { delivery: clone(d), duplicate: false };
  }
  async getDelivery(deliveryId: string) {
    const d = this.deliveries.get(deliveryId);
    return d ? clone(d) : null;
  }
  async listDeliveries(opts: { status?: DeliveryStatus; channelId?: string; limit?: number } = {}) {
    return [...this.deliveries.values()]
      .filter((d) => (opts.status === undefined || d.status === opts.status) && (opts.channelId === undefined || d.channelId === opts.channelId))
      .reverse()
      .slice(0, opts.limit ?? Number.MAX_SAFE_INTEGER)
      .map(clone);
  }
  async dueDeliveries(nowMs: number, limit: number) {
    return [...this.deliveries.values()]
      .filter((d) => d.status === 'pending' && d.nextAttemptAtMs <= nowMs)
      .sort((a, b) => a.nextAttemptAtMs - b.nextAttemptAtMs)
      .slice(0, limit)
      .map(clone);
  }
  async nextDeliveryDueAtMs() {
    let min: number | null = null;
    for (const d of this.deliveries.values()) if (d.status === 'pending' && (min === null || d.nextAttemptAtMs < min)) min = d.nextAttemptAtMs;
    return min;
  }
  async recordDeliveryAttempt(a: DeliveryAttempt) {
    const d = this.deliveries.get(a.deliveryId);
    if (d?.status !== 'pending') return null;
    const next = applyAttempt(d, a);
    this.deliveries.set(d.deliveryId, next);
    if (a.outcome === 'dead' && a.deadAudit) this.commitAudit(this.prepareAudit(a.deadAudit));
    return clone(next);
  }

  async createCronJob(input: NewCronJob) {
    const { audit, ...rest } = input;
    const job: CronJob = { ...rest, updatedAtMs: input.createdAtMs };
    this.cronJobs.set(job.jobId, job);
    this.commitAudit(this.prepareAudit(audit));
    return clone(job);
  }
  async getCronJob(jobId: string) {
    const j = this.cronJobs.get(jobId);
    return j ? clone(j) : null;
  }
  async listCronJobs() {
    return [...this.cronJobs.values()].sort((a, b) => a.createdAtMs - b.createdAtMs).map(clone);
  }
  async updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput) {
    const j = this.cronJobs.get(jobId);
    if (!j) return null;
    const next: CronJob = { ...j, ...clone(patch), updatedAtMs: atMs };
    this.cronJobs.set(jobId, next);
    this.commitAudit(this.prepareAudit(audit));
    return clone(next);
  }
  async removeCronJob(jobId: string, audit: AuditInput) {
    if (!this.cronJobs.delete(jobId)) return false;
    this.cronRuns = this.cronRuns.filter((r) => r.jobId !== jobId);
    this.commitAudit(this.prepareAudit(audit));
    return true;
  }
  async recordCronRun(run: CronRun, nextRunAtMs: number | null) {
    const j = this.cronJobs.get(run.jobId);
    if (!j) return null;
    this.cronRuns.push(clone(run));
    const next: CronJob = { ...j, nextRunAtMs, lastRunAtMs: run.startedAtMs };
    this.cronJobs.set(j.jobId, next);
    return clone(next);
  }
  async listCronRuns(jobId: string, limit = 50) {
    return this.cronRuns
      .filter((r) => r.jobId === jobId)
      .reverse()
      .slice(0, limit)
      .map(clone);
  }

  async importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult> {
    const existing = new Map<string, ExistingDevice>();
    for (const d of input.devices) {
      const dev = this.devices.get(d.deviceId);
      existing.set(d.deviceId, {
        device: dev ? clone(dev) : null,
        grants: [...this.grants.values()].filter((g) => g.deviceId === d.deviceId),
        tokens: [...this.tokens.values()].filter((t) => t.deviceId === d.deviceId),
        surface: this.nodeSurfaces.get(d.deviceId) ?? null,
      });
    }
    const others = otherDeviceCount(this.devices.size, existing, input);
    if (!input.merge && others > 0) return { ok: false, reason: 'not-empty', otherDevices: others };
    const plans = input.devices.map((d) => planDeviceImport(existing.get(d.deviceId) as ExistingDevice, d, input));
    if (input.dryRun) return { ok: true, devices: plans.map((p) => p.report), applied: false };
    // Checked before anything changes, as the SQL adapters' primary key would refuse it mid-transaction.
    const ids = new Set<string>();
    for (const p of plans) {
      for (const t of p.tokens) {
        const held = this.tokens.get(t.tokenId);
        if (ids.has(t.tokenId) || (held && !(held.deviceId === p.report.deviceId && held.role === t.role))) throw new Error(`token id ${t.tokenId} is taken`);
        ids.add(t.tokenId);
      }
    }
    // Every audit entry is built before anything changes, so a failure leaves the store untouched.
    const entries: AuditEntry[] = [];
    let last = this.audit[this.audit.length - 1];
    for (const p of plans) {
      if (!p.audit) continue;
      last = chainAudit(last, p.audit);
      entries.push(last);
    }
    for (const p of plans) {
      if (p.newDevice) this.devices.set(p.newDevice.deviceId, clone(p.newDevice));
      for (const g of p.grants) this.grants.set(gk(g.deviceId, g.role), clone(g));
      for (const t of p.tokens) {
        this.dropTokens(p.report.deviceId, t.role);
        this.tokens.set(t.tokenId, { ...t, deviceId: p.report.deviceId, secretHash: Buffer.from(t.secretHash) });
      }
      if (p.surface) this.nodeSurfaces.set(p.surface.deviceId, clone(p.surface));
    }
    for (const e of entries) this.commitAudit(e);
    return { ok: true, devices: plans.map((p) => p.report), applied: true };
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

  async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
    const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0 };
    if (c.deliveredBeforeMs !== null) {
      const before = c.deliveredBeforeMs;
      for (const [id, d] of this.deliveries) {
        if (d.status === 'delivered' && d.deliveredAtMs !== undefined && d.deliveredAtMs < before) {
          this.deliveries.delete(id);
          out.deliveries++;
        }
      }
    }
    if (c.cronRunsBeforeMs !== null) {
      const before = c.cronRunsBeforeMs;
      const kept = this.cronRuns.filter((r) => r.finishedAtMs >= before);
      out.cronRuns = this.cronRuns.length - kept.length;
      this.cronRuns = kept;
    }
    if (c.signInLinksBeforeMs !== null) {
      for (const [key, value] of this.meta) {
        if (key.startsWith(SIGN_IN_LINK_META_PREFIX) && signInLinkPrunable(value, c.signInLinksBeforeMs)) {
          this.meta.delete(key);
          out.signInLinks++;
        }
      }
    }
    if (c.setupCodesBeforeMs !== null) {
      for (const [id, code] of this.setups) {
        if (code.expiresAtMs < c.setupCodesBeforeMs) {
          this.setups.delete(id);
          out.setupCodes++;
        }
      }
    }
    return out;
  }

  async pendingDeliveryCount(): Promise<number> {
    let n = 0;
    for (const d of this.deliveries.values()) if (d.status === 'pending') n++;
    return n;
  }
}

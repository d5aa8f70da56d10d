/**
 * The notifier behind `gateway.approvals.notify`: hears the pairing events this instance
 * originates and queues one delivery per configured channel in the persisted outbox. Runs after
 * the request is filed and never awaits the HTTP post, so a slow or dead target cannot hold or
 * lose a request; the outbox retries and dead-letters as for any webhook (automations/webhook.ts).
 * Message shapes and escaping: core/approval-notify.ts.
 */
import { type ApprovalMessage, controlUiBase, formatOf, mintRequestLink, type NotifyTarget, notifyBody } from '../core/approval-notify.js';
import type { Gateway } from '../core/gateway.js';
import { advertisedUrlOf } from '../methods/setup.js';

type Payload = Record<string, unknown>;

/** What the notifier uses of the gateway. */
export type NotifierDeps = Pick<Gateway, 'onBroadcast' | 'store' | 'clock' | 'random' | 'log'>;

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const progressOf = (v: unknown): ApprovalMessage['approvals'] => {
  const p = v as { received?: unknown; required?: unknown } | undefined;
  return p && typeof p.received === 'number' && typeof p.required === 'number' ? { received: p.received, required: p.required } : null;
};

/** Requests seen here, so a resolution can name what it resolved (bounded; the store is the fallback). */
const MAX_REMEMBERED = 1_000;

export class ApprovalNotifier {
  private readonly seen = new Map<string, Pick<ApprovalMessage, 'name' | 'platform' | 'address' | 'role' | 'adds' | 'kind'>>();
  /** Queued posts in flight (tests and shutdown wait for them). */
  private pending = new Set<Promise<void>>();

  constructor(
    private readonly gw: NotifierDeps,
    private readonly targets: readonly NotifyTarget[],
    private readonly kick: () => void,
  ) {}

  start(): void {
    if (this.targets.length === 0) return;
    this.gw.onBroadcast((event, payload) => {
      const message = this.messageOf(event, payload as Payload);
      if (!message) return;
      const job = this.queue(message)
        .catch((err) => this.gw.log.error('approval notification not queued', { requestId: message.requestId, err: String(err) }))
        .finally(() => this.pending.delete(job));
      this.pending.add(job);
    });
  }

  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private messageOf(event: string, p: Payload): ApprovalMessage | null {
    const requestId = str(p.requestId);
    if (!requestId) return null;
    const base = {
      requestId,
      link: null,
      linkExpiresAtMs: null,
      approvals: progressOf(p.approvals),
    };
    if (event === 'device.pair.requested' || event === 'node.pair.requested') {
      // A recorded quorum vote re-announces the request: not a new request.
      if (p.approvalRecorded === true) return null;
      const kind = event === 'node.pair.requested' ? 'node' : 'device';
      const deviceId = str(kind === 'node' ? p.nodeId : p.deviceId) ?? '';
      const m: ApprovalMessage = {
        ...base,
        phase: 'requested',
        kind,
        deviceId,
        name: str(p.displayName),
        platform: str(p.platform),
        address: str(p.remoteIp),
        role: kind === 'node' ? 'node' : (str(p.role) ?? 'operator'),
        adds: strs(p.adds ?? (kind === 'node' ? p.commands : p.scopes)),
        confirmationCode: str(p.confirmationCode),
        approveCommand: kind === 'node' ? `clawgate nodes approve ${requestId}` : `clawgate devices approve ${requestId}`,
        decision: null,
      };
      this.remember(requestId, m);
      return m;
    }
    if (event === 'device.pair.resolved' || event === 'node.pair.resolved') {
      const decision = str(p.decision);
      if (!decision || decision === 'removed' || requestId === '') return null;
      const kind = event === 'node.pair.resolved' ? 'node' : 'device';
      const known = this.seen.get(requestId);
      this.seen.delete(requestId);
      return {
        ...base,
        phase: 'resolved',
        kind,
        deviceId: str(kind === 'node' ? p.nodeId : p.deviceId) ?? '',
        name: known?.name ?? null,
        platform: known?.platform ?? null,
        address: known?.address ?? null,
        role: known?.role ?? (kind === 'node' ? 'node' : 'operator'),
        adds: known?.adds ?? [],
        confirmationCode: null,
        approveCommand: '',
        decision,
      };
    }
    return null;
  }

  private remember(requestId: string, m: ApprovalMessage): void {
    if (this.seen.size >= MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value as string);
    this.seen.set(requestId, { name: m.name, platform: m.platform, address: m.address, role: m.role, adds: m.adds, kind: m.kind });
  }

  private async queue(m: ApprovalMessage): Promise<void> {
    const { gw } = this;
    if (m.phase === 'resolved' && m.name === null) {
      // Resolved on another instance than the one that saw the request: name it from the store.
      const d = await gw.store.getDevice(m.deviceId);
      if (d) {
        m.name = d.label ?? d.displayName ?? null;
        m.platform = d.platform ?? null;
      }
    }
    const where = advertisedUrlOf(gw);
    let queued = 0;
    for (const target of this.targets) {
      const channel = await gw.store.getChannel(target.channel);
      if (!channel) {
        gw.log.warn('approval notification skipped: channel is gone', { channel: target.channel, requestId: m.requestId });
        continue;
      }
      // Every message gets its own link: each works once.
      const link = m.phase === 'requested' && where ? await mintRequestLink(gw, m.requestId, m.kind) : null;
      const message = link ? { ...m, link: `${controlUiBase(where as string)}#request=${link.token}`, linkExpiresAtMs: link.expiresAtMs } : m;
      const now = gw.clock.now();
      const deliveryId = gw.random.uuid();
      const phaseKey = m.phase === 'requested' ? `requested:${m.adds.join(',')}` : `resolved:${m.decision}`;
      await gw.store.enqueueDelivery({
        deliveryId,
        channelId: channel.channelId,
        channelName: channel.name,
        body: notifyBody(formatOf(target, channel.url), message, target.topic),
        // The same announcement twice (two instances, a repeated event) is one delivery.
        idempotencyKey: `approval:${m.requestId}:${phaseKey}`,
        actor: 'internal:approvals',
        createdAtMs: now,
        audit: { atMs: now, actor: 'internal:approvals', action: 'approval.notified', subject: m.requestId, data: { channel: channel.name, phase: m.phase } },
      });
      queued++;
    }
    if (queued > 0) this.kick();
  }
}

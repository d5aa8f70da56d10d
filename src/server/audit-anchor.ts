/**
 * The audit anchor file (`audit-anchor.json` in the state dir, mode 0600) and the writer that
 * keeps it on the chain head (docs/security.md §Audit log). The writer only ever moves the
 * anchor forward along the chain it already vouched for: before it signs a new head it checks
 * that the store still holds the anchored entry with the anchored hash and that every entry
 * since links to it. A store that was cut or rewritten therefore never gets a fresh signature;
 * the old anchor stays, and `clawgate audit --verify` keeps reporting it.
 */
import { readFileSync } from 'node:fs';
import { chmod, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { type AuditAnchor, brokenLink, parseAuditAnchor, signAuditAnchor } from '../core/audit-anchor.js';
import type { Clock } from '../core/env.js';
import type { GatewayIdentity } from '../core/gateway-identity.js';
import type { Logger } from '../core/logger.js';
import type { AuditEntry, Store } from '../core/store.js';
import { GENESIS_HASH } from '../store/shared.js';

export const AUDIT_ANCHOR_FILE = 'audit-anchor.json';

export type AnchorRead = { ok: true; anchor: AuditAnchor | null } | { ok: false; problem: string };

/** The state dir's anchor: null when there is none, a problem when the file is not an anchor. */
export function readAuditAnchor(stateDir: string): AnchorRead {
  const path = join(stateDir, AUDIT_ANCHOR_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: true, anchor: null };
    return { ok: false, problem: `cannot read ${path}: ${(err as Error).message}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, problem: `${path} is not JSON (the anchor was damaged or replaced)` };
  }
  const anchor = parseAuditAnchor(json);
  return anchor ? { ok: true, anchor } : { ok: false, problem: `${path} is not an audit anchor (the anchor was damaged or replaced)` };
}

/**
 * Replace the anchor durably: a crash leaves the old or the new file, never a torn one. Async, so
 * the fsyncs run off the event loop: an append's caller never waits for them (chat messages are
 * audited too, and a synchronous fsync per message stalled every socket).
 */
export async function writeAuditAnchor(stateDir: string, anchor: AuditAnchor): Promise<void> {
  const path = join(stateDir, AUDIT_ANCHOR_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(anchor)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await chmod(tmp, 0o600);
  await rename(tmp, path);
  try {
    const dir = await open(stateDir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // Directory fsync is best effort where the platform refuses it.
  }
}

/** Keeps the state dir's anchor on the store's audit head; one refresh at a time, triggers coalesce. */
export class AuditAnchorWriter {
  private anchor: AuditAnchor | null = null;
  private running: Promise<void> = Promise.resolve();
  private queued = false;
  /** Set once the store stopped extending the anchor: nothing is signed any more (until an operator acts). */
  private mismatch: string | null = null;

  constructor(
    private readonly store: Store,
    private readonly identity: GatewayIdentity,
    private readonly stateDir: string,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Load the anchor, anchor the current head (first start: the whole log is checked once), follow appends. */
  async start(): Promise<void> {
    const read = readAuditAnchor(this.stateDir);
    if (!read.ok) {
      // A damaged anchor is evidence: it is kept, and no new one is written over it.
      this.mismatch = read.problem;
      this.log.error('audit anchor unusable; not signing the audit head until an operator checks it (clawgate audit --verify)', { problem: read.problem });
      return;
    }
    this.anchor = read.anchor;
    this.store.onAuditAppended?.(() => this.trigger());
    this.trigger();
    await this.settled();
  }

  /** A commit appended to the log: refresh the anchor soon (several appends may share one refresh). */
  trigger(): void {
    if (this.queued) return;
    this.queued = true;
    this.running = this.running.then(async () => {
      this.queued = false;
      try {
        await this.refresh();
      } catch (err) {
        this.log.error('audit anchor not updated', { err: String(err) });
      }
    });
  }

  /** Resolves once every refresh triggered so far is done (shutdown, tests). */
  async settled(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.running;
      await seen;
    } while (seen !== this.running);
  }

  get current(): AuditAnchor | null {
    return this.anchor;
  }

  private async refresh(): Promise<void> {
    if (this.mismatch) return;
    const from = this.anchor;
    // From the anchored entry itself (to check it is still there, unchanged) to the head.
    const entries: AuditEntry[] = await this.store.listAudit({ afterSeq: from ? from.seq - 1 : 0 });
    if (from) {
      const first = entries[0];
      if (!first || first.seq !== from.seq || first.hash !== from.hash) {
        this.refuse(`the store no longer holds entry ${from.seq} with the anchored hash (truncated or rewritten)`);
        return;
      }
    }
    const bad = from ? brokenLink(entries.slice(1), from.hash) : brokenLink(entries, GENESIS_HASH);
    if (bad !== null || (!from && entries.length > 0 && entries[0]?.seq !== 1)) {
      this.refuse(`the hash chain is broken at entry ${bad ?? entries[0]?.seq}`);
      return;
    }
    const head = entries[entries.length - 1];
    if (!head || (from && head.seq <= from.seq)) return;
    const next = signAuditAnchor(this.identity, head, this.clock.now());
    await writeAuditAnchor(this.stateDir, next);
    this.anchor = next;
  }

  private refuse(problem: string): void {
    this.mismatch = problem;
    this.log.error('the audit log does not extend its anchor; the anchor is kept as evidence and no longer advanced (clawgate audit --verify)', {
      problem,
      anchoredSeq: this.anchor?.seq,
    });
  }
}

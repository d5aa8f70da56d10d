/**
 * ClusterBus over PostgreSQL LISTEN/NOTIFY. A NOTIFY payload is limited to 8000 bytes, so a
 * larger event is written to `cluster_events` and only its id is notified. One dedicated
 * connection listens; when it drops it is re-opened with backoff and subscribers are told to
 * resync from the store (notifications sent while it was down are gone).
 */
import pg from 'pg';
import type { ClusterBus, ClusterEvent, RemoteNode, RemoteNodeDetail } from '../../core/cluster.js';
import type { Logger } from '../../core/logger.js';
import { connectTimeoutMs } from './db.js';

export const CLUSTER_CHANNEL = 'clawgate_cluster';
export const LISTENER_APP_NAME = 'clawgate-listen';
export const LEADER_APP_NAME = 'clawgate-leader';
/** Stay well under PostgreSQL's 8000-byte NOTIFY limit. */
const MAX_INLINE_BYTES = 7000;
/** Table-backed events are read within milliseconds; keep them a while for slow readers. */
const EVENT_KEEP_MS = 5 * 60_000;
/** Every instance refreshes its row this often; one silent for STALE_MS is considered gone. */
export const HEARTBEAT_MS = 2_000;
export const STALE_MS = 10_000;

/** Advisory lock key of a leadership name: the "claw" namespace and a 31-bit hash of the name. */
function leaderKey(name: string): [number, number] {
  let h = 7;
  for (const ch of name) h = (Math.imul(h, 31) + ch.charCodeAt(0)) | 0;
  return [0x636c6177, 1000 + (h & 0x3fffffff)];
}

interface Envelope {
  /** Origin instance. */
  o: string;
  e?: ClusterEvent;
  /** Id of a row in cluster_events holding the event. */
  ref?: number;
}

export class PgClusterBus implements ClusterBus {
  private listener: pg.Client | null = null;
  private handlers: Array<{ on: (e: ClusterEvent) => void; resync?: (() => void) | undefined }> = [];
  private closed = false;
  private retryMs = 100;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private published = 0;
  private beats = 0;
  private receiving: Promise<void> = Promise.resolve();
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly leaders: Array<{ client: pg.Client | null; timer: NodeJS.Timeout | null }> = [];

  /** The store's pool (heartbeats, presence, large events); set by `attach`. */
  private pool!: pg.Pool;

  private constructor(
    private readonly url: string,
    readonly instanceId: string,
    private readonly log: Pick<Logger, 'warn' | 'info'>,
  ) {}

  /** Start listening; resolves once LISTEN is active, so nothing published after it is missed. */
  static async start(pool: pg.Pool, url: string, instanceId: string, log: Pick<Logger, 'warn' | 'info'>): Promise<PgClusterBus> {
    const bus = await PgClusterBus.listening(url, instanceId, log);
    await bus.attach(pool);
    return bus;
  }

  /**
   * The first half of `start`: the LISTEN connection, which needs no schema, so a starting
   * gateway opens it while the store still connects and checks the schema. `attach` the
   * store's pool before using the bus.
   */
  static async listening(url: string, instanceId: string, log: Pick<Logger, 'warn' | 'info'>): Promise<PgClusterBus> {
    const bus = new PgClusterBus(url, instanceId, log);
    await bus.listen();
    return bus;
  }

  /** The second half of `start`: this instance's first heartbeat, then one every HEARTBEAT_MS. A failure closes the bus. */
  async attach(pool: pg.Pool): Promise<void> {
    this.pool = pool;
    try {
      await this.beat();
    } catch (err) {
      await this.close();
      throw err;
    }
    this.heartbeat = setInterval(() => {
      this.beat().catch((err) => this.log.warn('cluster heartbeat failed', { err: String(err) }));
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  private async listen(): Promise<void> {
    // Named, so an operator (or a test) can tell the listening connections apart in pg_stat_activity.
    // Bounded like the pool's connections: a start whose store fails does not wait longer for this one.
    const c = new pg.Client({ connectionString: this.url, application_name: LISTENER_APP_NAME, connectionTimeoutMillis: connectTimeoutMs(this.url) });
    c.on('error', (err) => this.lost(c, err));
    c.on('end', () => this.lost(c, new Error('connection ended')));
    c.on('notification', (m) => {
      if (m.channel !== CLUSTER_CHANNEL || !m.payload) return;
      const text = m.payload;
      // One at a time: a table-backed event is fetched before the events notified after it run.
      this.receiving = this.receiving.then(() => this.receive(text)).catch((err) => this.log.warn('cluster event failed', { err: String(err) }));
    });
    await c.connect();
    await c.query(`LISTEN ${CLUSTER_CHANNEL}`);
    if (this.closed) {
      await c.end();
      return;
    }
    this.listener = c;
    this.retryMs = 100;
  }

  private lost(c: pg.Client, err: Error): void {
    if (this.closed || this.listener !== c) return;
    this.listener = null;
    this.log.warn('cluster event connection lost; reconnecting', { err: String(err) });
    c.end().catch(() => {});
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.listen().then(
        () => {
          this.log.info('cluster event connection restored');
          for (const h of this.handlers) h.resync?.();
        },
        (err) => {
          this.log.warn('cluster event reconnect failed', { err: String(err) });
          this.retryMs = Math.min(this.retryMs * 2, 5_000);
          this.scheduleReconnect();
        },
      );
    }, this.retryMs);
    this.reconnectTimer.unref();
  }

  private async receive(text: string): Promise<void> {
    let env: Envelope;
    try {
      env = JSON.parse(text) as Envelope;
    } catch {
      return;
    }
    // Events from the database's own triggers (origin `db`) go to every instance, this one included.
    if (env.o === this.instanceId) return;
    let event = env.e;
    if (!event && typeof env.ref === 'number') {
      try {
        const r = await this.pool.query('SELECT body FROM cluster_events WHERE id = $1', [env.ref]);
        if (r.rows[0]) event = JSON.parse(r.rows[0].body as string) as ClusterEvent;
      } catch (err) {
        this.log.warn('could not read a cluster event', { ref: env.ref, err: String(err) });
      }
    }
    if (!event) return;
    for (const h of this.handlers) {
      try {
        h.on(event);
      } catch (err) {
        this.log.warn('cluster event handler failed', { type: event.type, err: String(err) });
      }
    }
  }

  async publish(event: ClusterEvent): Promise<void> {
    if (this.closed) return;
    let text = JSON.stringify({ o: this.instanceId, e: event } satisfies Envelope);
    if (Buffer.byteLength(text) > MAX_INLINE_BYTES) {
      const now = Date.now();
      const r = await this.pool.query('INSERT INTO cluster_events (at_ms, body) VALUES ($1, $2) RETURNING id', [now, JSON.stringify(event)]);
      text = JSON.stringify({ o: this.instanceId, ref: Number(r.rows[0].id) } satisfies Envelope);
      if (++this.published % 50 === 1) await this.pool.query('DELETE FROM cluster_events WHERE at_ms < $1', [now - EVENT_KEEP_MS]);
    }
    await this.pool.query('SELECT pg_notify($1, $2)', [CLUSTER_CHANNEL, text]);
  }

  subscribe(handler: (event: ClusterEvent) => void, onResync?: () => void): void {
    this.handlers.push({ on: handler, resync: onResync });
  }

  /** Refresh this instance's liveness; now and then clear what crashed instances left behind. */
  private async beat(): Promise<void> {
    const now = Date.now();
    await this.pool.query(
      'INSERT INTO cluster_instances (instance_id, seen_at_ms) VALUES ($1, $2) ON CONFLICT (instance_id) DO UPDATE SET seen_at_ms = excluded.seen_at_ms',
      [this.instanceId, now],
    );
    if (++this.beats % 10 === 1) {
      await this.pool.query('DELETE FROM cluster_instances WHERE seen_at_ms < $1', [now - 6 * STALE_MS]);
      await this.pool.query('DELETE FROM session_presence p WHERE NOT EXISTS (SELECT 1 FROM cluster_instances i WHERE i.instance_id = p.instance_id)');
    }
  }

  /** Announcements still in flight, so a withdrawal never overtakes the row it removes. */
  private readonly announcing = new Map<string, Promise<unknown>>();

  async announceSession(connId: string, deviceId: string, role: string, atMs: number, detail?: RemoteNodeDetail): Promise<void> {
    const p = this.pool.query(
      `INSERT INTO session_presence (conn_id, device_id, role, instance_id, connected_at_ms, detail_json) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT DO NOTHING`,
      [connId, deviceId, role, this.instanceId, atMs, detail ? JSON.stringify(detail) : null],
    );
    this.announcing.set(
      connId,
      p.catch(() => {}),
    );
    try {
      await p;
    } finally {
      this.announcing.delete(connId);
    }
  }

  async withdrawSession(connId: string): Promise<void> {
    await this.announcing.get(connId);
    await this.pool.query('DELETE FROM session_presence WHERE conn_id = $1', [connId]);
  }

  async instanceLive(instanceId: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM cluster_instances WHERE instance_id = $1 AND seen_at_ms >= $2', [instanceId, Date.now() - STALE_MS]);
    return r.rows.length > 0;
  }

  async hasSession(deviceId: string, role: string, opts?: { exceptSelf?: boolean }): Promise<boolean> {
    const r = await this.pool.query(
      `SELECT 1 FROM session_presence p JOIN cluster_instances i ON i.instance_id = p.instance_id
       WHERE p.device_id = $1 AND p.role = $2 AND i.seen_at_ms >= $3 AND p.instance_id <> $4 LIMIT 1`,
      [deviceId, role, Date.now() - STALE_MS, opts?.exceptSelf ? this.instanceId : ''],
    );
    return r.rows.length > 0;
  }

  async connectedDevices(): Promise<Set<string>> {
    const r = await this.pool.query(
      `SELECT DISTINCT p.device_id FROM session_presence p JOIN cluster_instances i ON i.instance_id = p.instance_id WHERE i.seen_at_ms >= $1`,
      [Date.now() - STALE_MS],
    );
    return new Set(r.rows.map((x) => x.device_id as string));
  }

  async nodePresence(): Promise<Map<string, RemoteNode>> {
    const r = await this.pool.query(
      `SELECT DISTINCT ON (p.device_id) p.device_id, p.instance_id, p.connected_at_ms, p.detail_json
       FROM session_presence p JOIN cluster_instances i ON i.instance_id = p.instance_id
       WHERE p.role = 'node' AND i.seen_at_ms >= $1 ORDER BY p.device_id, p.connected_at_ms DESC`,
      [Date.now() - STALE_MS],
    );
    const out = new Map<string, RemoteNode>();
    for (const row of r.rows) {
      out.set(row.device_id as string, {
        instanceId: row.instance_id as string,
        connectedAtMs: Number(row.connected_at_ms),
        detail: row.detail_json ? (JSON.parse(row.detail_json as string) as RemoteNodeDetail) : null,
      });
    }
    return out;
  }

  async locateNode(deviceId: string): Promise<string | null> {
    const r = await this.pool.query(
      `SELECT p.instance_id FROM session_presence p JOIN cluster_instances i ON i.instance_id = p.instance_id
       WHERE p.device_id = $1 AND p.role = 'node' AND i.seen_at_ms >= $2 ORDER BY p.connected_at_ms DESC LIMIT 1`,
      [deviceId, Date.now() - STALE_MS],
    );
    return (r.rows[0]?.instance_id as string | undefined) ?? null;
  }

  /**
   * Leadership by a session-level advisory lock held on a dedicated connection: when the leader
   * dies its connection closes, PostgreSQL releases the lock, and another instance takes it at
   * its next try (every HEARTBEAT_MS). When the lock connection breaks while the process lives
   * (a database restart, a terminated backend, a failover) the lock is gone too: `lost` tells
   * the owner to stop leading at once, and this instance goes back to trying, so some live
   * instance always leads again within about HEARTBEAT_MS of the database answering.
   */
  lead(name: string, gained: () => void, lost: () => void): void {
    const key = leaderKey(name);
    const slot: { client: pg.Client | null; timer: NodeJS.Timeout | null } = { client: null, timer: null };
    this.leaders.push(slot);
    const retry = () => {
      if (this.closed || slot.timer) return;
      slot.timer = setTimeout(() => void attempt(), HEARTBEAT_MS);
      slot.timer.unref();
    };
    const attempt = async () => {
      slot.timer = null;
      if (this.closed || slot.client) return;
      // Named, so an operator can see which instance holds the lock (pg_stat_activity joined with pg_locks).
      const c = new pg.Client({ connectionString: this.url, application_name: LEADER_APP_NAME });
      c.on('error', () => {});
      try {
        await c.connect();
        const r = await c.query('SELECT pg_try_advisory_lock($1, $2) AS ok', key);
        if (r.rows[0]?.ok === true && !this.closed) {
          slot.client = c;
          c.once('end', () => {
            if (slot.client !== c) return;
            slot.client = null;
            if (this.closed) return;
            this.log.warn('cluster leadership lost', { name });
            lost();
            retry();
          });
          this.log.info('cluster leadership gained', { name });
          gained();
          return;
        }
        await c.end();
      } catch (err) {
        this.log.warn('cluster leadership attempt failed', { name, err: String(err) });
        await c.end().catch(() => {});
      }
      retry();
    };
    void attempt();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const l of this.leaders) {
      if (l.timer) clearTimeout(l.timer);
      const c = l.client;
      l.client = null;
      await c?.end().catch(() => {});
    }
    // A clean stop withdraws at once; a crash is noticed by the others after STALE_MS. (A bus
    // closed before `attach` never announced itself.)
    if (this.pool) {
      await this.pool.query('DELETE FROM session_presence WHERE instance_id = $1', [this.instanceId]).catch(() => {});
      await this.pool.query('DELETE FROM cluster_instances WHERE instance_id = $1', [this.instanceId]).catch(() => {});
    }
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const c = this.listener;
    this.listener = null;
    await c?.end().catch(() => {});
  }
}

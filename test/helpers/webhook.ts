/** A local HTTP listener standing in for a Discord webhook: records every request, answers as told. */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  path: string;
  atMs: number;
}

export class WebhookTarget {
  readonly received: Received[] = [];
  /** HTTP status to answer with; 'drop' destroys the socket without an answer; 'hang' records the request and never answers. */
  answer: number | 'drop' | 'hang' = 204;
  private waiters: Array<{ n: number; resolve: () => void }> = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(port = 0): Promise<WebhookTarget> {
    let target: WebhookTarget | null = null;
    const server = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        const t = target as WebhookTarget;
        if (t.answer === 'drop') {
          req.socket.destroy();
          return;
        }
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          body = { unparsable: text };
        }
        t.received.push({ headers: req.headers, body, path: req.url ?? '/', atMs: Date.now() });
        if (t.answer === 'hang') {
          t.notify();
          return;
        }
        res.writeHead(t.answer);
        res.end();
        t.notify();
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
    const addr = server.address() as AddressInfo;
    target = new WebhookTarget(server, `http://127.0.0.1:${addr.port}/api/webhooks/1/secret-token`);
    return target;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Resolves once at least `n` requests were answered with a 2xx (or recorded at all, for non-2xx answers). */
  waitFor(n: number, timeoutMs = 15_000): Promise<void> {
    if (this.received.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`webhook got ${this.received.length} of ${n} requests`)), timeoutMs);
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  private notify(): void {
    const ready = this.waiters.filter((w) => this.received.length >= w.n);
    this.waiters = this.waiters.filter((w) => this.received.length < w.n);
    for (const w of ready) w.resolve();
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

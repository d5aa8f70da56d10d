/**
 * SDK-CORE: the Control UI's credential store for `@clawgate/client`. The SDK's IndexedDB store
 * keeps a whole gateway record durable; the Control UI must not: its device token lives in this
 * tab's sessionStorage only, and a pasted owner credential or gateway token (the record's
 * `sharedToken`) lives in memory only, for this page. So the record is split:
 * - IndexedDB (via the SDK's IndexedDbCredentialStore): url, device id and the non-extractable
 *   key — the browser's lasting identity;
 * - sessionStorage: the role tokens;
 * - memory: the shared secret and any bootstrap token.
 */
import { type CredentialStore, type GatewayRecord, IndexedDbCredentialStore, type UpdateOptions } from '../../../packages/client/dist/browser.js';

const TOKENS_PREFIX = 'clawgate.tokens.';

export class SessionCredentialStore implements CredentialStore {
  private readonly durable = new IndexedDbCredentialStore('clawgate-control-ui');
  private readonly secrets = new Map<string, Pick<GatewayRecord, 'sharedToken' | 'bootstrap'>>();

  private merge(rec: GatewayRecord | null): GatewayRecord | null {
    if (!rec) return null;
    let tokens: GatewayRecord['tokens'] = {};
    try {
      tokens = JSON.parse(sessionStorage.getItem(TOKENS_PREFIX + rec.key) ?? '{}') as GatewayRecord['tokens'];
    } catch {
      tokens = {};
    }
    return { ...rec, tokens, ...this.secrets.get(rec.key) };
  }

  private split(rec: GatewayRecord): GatewayRecord {
    const { sharedToken, bootstrap, tokens, ...rest } = rec;
    const secrets: Pick<GatewayRecord, 'sharedToken' | 'bootstrap'> = {};
    if (sharedToken !== undefined) secrets.sharedToken = sharedToken;
    if (bootstrap !== undefined) secrets.bootstrap = bootstrap;
    this.secrets.set(rec.key, secrets);
    sessionStorage.setItem(TOKENS_PREFIX + rec.key, JSON.stringify(tokens));
    return { ...rest, tokens: {} };
  }

  async load(key: string): Promise<GatewayRecord | null> {
    return this.merge(await this.durable.load(key));
  }

  async update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, opts?: UpdateOptions): Promise<GatewayRecord | null> {
    let full: GatewayRecord | null = null;
    await this.durable.update(
      key,
      (current) => {
        full = mutate(this.merge(current));
        if (!full) {
          this.secrets.delete(key);
          sessionStorage.removeItem(TOKENS_PREFIX + key);
          return null;
        }
        return this.split(full);
      },
      opts,
    );
    return full;
  }

  async list(): Promise<GatewayRecord[]> {
    return (await this.durable.list()).map((r) => this.merge(r) as GatewayRecord);
  }

  /** Log out: forget this tab's tokens and the in-memory secrets (the key stays). */
  forgetSession(key: string): void {
    this.secrets.delete(key);
    sessionStorage.removeItem(TOKENS_PREFIX + key);
  }

  /** The device token this tab holds for a gateway, if any. */
  tabToken(key: string): string | null {
    try {
      const tokens = JSON.parse(sessionStorage.getItem(TOKENS_PREFIX + key) ?? '{}') as GatewayRecord['tokens'];
      return tokens.operator?.token ?? null;
    } catch {
      return null;
    }
  }
}

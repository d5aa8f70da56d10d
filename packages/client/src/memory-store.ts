/** A credential store in memory: for tests, and for validating a credential in isolation. */
import { cloneRecord, KeyedQueue } from './credentials.js';
import type { CredentialStore, GatewayRecord, UpdateOptions } from './types.js';

export class MemoryCredentialStore implements CredentialStore {
  private readonly records = new Map<string, GatewayRecord>();
  private readonly queue = new KeyedQueue();

  async load(key: string): Promise<GatewayRecord | null> {
    const r = this.records.get(key);
    return r ? cloneRecord(r) : null;
  }

  update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, _opts?: UpdateOptions): Promise<GatewayRecord | null> {
    return this.queue.run(key, async () => {
      const current = this.records.get(key);
      const next = mutate(current ? cloneRecord(current) : null);
      if (next) this.records.set(key, cloneRecord(next));
      else this.records.delete(key);
      return next ? cloneRecord(next) : null;
    });
  }

  async list(): Promise<GatewayRecord[]> {
    return [...this.records.values()].map(cloneRecord);
  }
}

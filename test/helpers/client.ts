/** Shared steps of the client SDK tests: an owner session, minting setup codes, temp stores. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientState, GatewayClient } from '@clawgate/client';
import { connectGateway, type GatewayConnection } from '../../src/client/connection.js';
import { asOwner, type TestGateway } from './gateway.js';

export function owner(tg: TestGateway): Promise<GatewayConnection> {
  return connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
}

/** Run one owner call and close. */
export async function ownerCall<T = unknown>(tg: TestGateway, method: string, params: unknown = {}): Promise<T> {
  const c = await owner(tg);
  try {
    return await c.request<T>(method, params);
  } finally {
    await c.close();
  }
}

export interface Minted {
  setupId: string;
  setupCode: string;
  link: string;
  expiresAtMs: number;
  gatewayUrl: string;
}

export function mintCode(tg: TestGateway, params: Record<string, unknown> = {}): Promise<Minted> {
  return ownerCall<Minted>(tg, 'device.pair.setupCode', params);
}

export function tempDir(prefix = 'clawgate-client-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Resolve once the client reaches a state with this status (fails after timeoutMs). */
export function reach<S extends ClientState['status']>(client: GatewayClient, status: S, timeoutMs = 10_000): Promise<Extract<ClientState, { status: S }>> {
  return client.waitFor((s) => s.status === status, timeoutMs) as Promise<Extract<ClientState, { status: S }>>;
}

export interface DeviceView {
  deviceId: string;
  roles: string[];
  scopes: string[];
}

export async function pairedDevices(tg: TestGateway): Promise<DeviceView[]> {
  const r = await ownerCall<{ paired: DeviceView[] }>(tg, 'device.pair.list');
  return r.paired;
}

/**
 * The floor: the least a gateway has to do per connect, on this machine, with the same `ws`
 * library and Node as clawgate. Per socket it sends a challenge; per `connect` it does one
 * hash-map lookup (device token hash → device, or device id → device) and, for a device, one
 * Ed25519 verification, then answers a minimal hello-ok. No schema validation, no store, no
 * sessions, no events. A shared-token connect with a new signed device "pairs" it (first
 * connect only) and returns a device token, so the load generator's device-token mode works.
 *
 * `node dist/bench/floor.js --port P --token T` (loopback only); `/readyz` answers 200.
 */
import { createHash, type KeyObject, randomBytes, randomUUID, timingSafeEqual, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { signaturePayloadV3, signedTokenField } from '@clawgate/protocol/signature';
import { type WebSocket, WebSocketServer } from 'ws';
import { deviceIdOf, publicKeyObject } from '../src/core/identity.js';

interface Device {
  deviceId: string;
  key: KeyObject;
}

interface ConnectParams {
  client?: { id?: string; mode?: string; platform?: string; deviceFamily?: string };
  role?: string;
  scopes?: string[];
  auth?: { token?: string; deviceToken?: string };
  device?: { id?: string; publicKey?: string; signature?: string; signedAt?: number; nonce?: string };
}

function main(): void {
  const { values } = parseArgs({ options: { port: { type: 'string' }, token: { type: 'string' } } });
  const port = Number(values.port);
  const shared = Buffer.from(values.token ?? '', 'utf8');
  if (!Number.isInteger(port) || shared.length === 0) throw new Error('usage: floor --port P --token T');

  const byId = new Map<string, Device>();
  const byTokenHash = new Map<string, Device>();
  const sha = (s: string) => createHash('sha256').update(s).digest('base64url');

  const http = createServer((req, res) => {
    res.writeHead(req.url === '/readyz' ? 200 : 404).end();
  });
  http.on('clientError', (_err, socket) => socket.destroy());
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 });
  http.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    wss.handleUpgrade(req, socket, head, (ws) => onSocket(ws));
  });

  function onSocket(ws: WebSocket): void {
    ws.on('error', () => ws.terminate());
    const nonce = randomUUID();
    ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce, ts: Date.now() } }));
    let done = false;
    ws.on('message', (data: Buffer) => {
      if (done) return;
      done = true;
      let frame: { id?: string; method?: string; params?: ConnectParams };
      try {
        frame = JSON.parse(data.toString('utf8'));
      } catch {
        return ws.close(1008, 'bad frame');
      }
      const reply = admit(frame.params ?? {}, nonce);
      if (typeof reply === 'string') {
        ws.send(JSON.stringify({ type: 'res', id: frame.id, ok: false, error: { code: 'INVALID_REQUEST', message: reply } }));
        return ws.close(1008, reply);
      }
      ws.send(JSON.stringify({ type: 'res', id: frame.id, ok: true, payload: { type: 'hello-ok', protocol: 4, auth: reply } }));
    });
  }

  function sharedOk(token: string | undefined): boolean {
    if (token === undefined) return false;
    const b = Buffer.from(token, 'utf8');
    return b.length === shared.length && timingSafeEqual(b, shared);
  }

  /** Hello-ok auth, or the reason for refusing. */
  function admit(p: ConnectParams, nonce: string): Record<string, unknown> | string {
    const role = p.role ?? 'operator';
    const scopes = p.scopes ?? [];
    const d = p.device;
    if (!d) return sharedOk(p.auth?.token) ? { method: 'token', role, scopes } : 'unauthorized';
    if (typeof d.id !== 'string' || typeof d.signature !== 'string' || typeof d.signedAt !== 'number' || d.nonce !== nonce) return 'bad device';
    let device: Device | undefined;
    let deviceToken: string | undefined = p.auth?.deviceToken;
    if (deviceToken !== undefined) {
      device = byTokenHash.get(sha(deviceToken));
      if (!device || device.deviceId !== d.id) return 'device token mismatch';
    } else {
      if (!sharedOk(p.auth?.token)) return 'unauthorized';
      device = byId.get(d.id);
      if (!device) {
        // First connect of this device: pair it (not on the measured path).
        const raw = Buffer.from(d.publicKey ?? '', 'base64url');
        if (raw.length !== 32 || deviceIdOf(raw) !== d.id) return 'device id mismatch';
        device = { deviceId: d.id, key: publicKeyObject(raw) };
        byId.set(d.id, device);
        deviceToken = randomBytes(32).toString('base64url');
        byTokenHash.set(sha(deviceToken), device);
      }
    }
    const payload = signaturePayloadV3({
      deviceId: d.id,
      clientId: p.client?.id ?? '',
      clientMode: p.client?.mode ?? '',
      role,
      scopes,
      signedAtMs: d.signedAt,
      token: signedTokenField(p.auth),
      nonce,
      platform: p.client?.platform,
      deviceFamily: p.client?.deviceFamily,
    });
    if (!verify(null, Buffer.from(payload, 'utf8'), device.key, Buffer.from(d.signature, 'base64url'))) return 'bad signature';
    return { method: p.auth?.deviceToken ? 'device-token' : 'token', role, scopes, ...(deviceToken ? { deviceToken } : {}) };
  }

  http.listen(port, '127.0.0.1');
  const stop = () => {
    for (const ws of wss.clients) ws.terminate();
    http.close(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main();

/**
 * `clawgate gateway run | token | key`: the gateway process itself and what it keeps in its
 * state dir.
 */
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { startGateway } from '../app.js';
import { type GatewayConfig, isLoopbackBind, resolveBindHost } from '../core/config.js';
import { systemClock, systemRandom } from '../core/env.js';
import type { Logger } from '../core/gateway.js';
import { GATEWAY_KEY_FILE, readGatewayKeyFingerprint } from '../server/gateway-key.js';
import { automationsConfig } from './automations.js';
import { GATEWAY_FLAGS, loadTls, resolveGatewaySettings } from './gateway-config.js';
import { openConfiguredStore, resolveStoreChoice } from './postgres.js';
import { ensureStateDir, loadOrCreateCredentials, readCredentials, removeRuntimeInfo, resolveStateDir, writeRuntimeInfo } from './state.js';
import { startupRefusal } from './state-health.js';
import { parse } from './usage.js';

function jsonLogger(stream: NodeJS.WriteStream): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) =>
    stream.write(`${JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields })}\n`);
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

export async function gatewayRun(args: string[]): Promise<number> {
  const { values } = parse(args, GATEWAY_FLAGS);
  const settings = resolveGatewaySettings(values);
  const { stateDir, base, chosenToken, password } = settings;
  const bind = base.bind;
  const storeChoice = resolveStoreChoice(values.store as string | undefined, values['postgres-url'] as string | undefined, settings.file.gateway ?? {});

  // A state dir or database the gateway cannot use is refused here, naming it and the fix,
  // instead of failing later with a bare errno or serving from a corrupt file.
  const refusal = startupRefusal(stateDir, storeChoice.kind === 'sqlite');
  if (refusal) {
    process.stderr.write(`refusing to start: ${refusal}\n`);
    return 1;
  }
  ensureStateDir(stateDir);
  const { creds, created } = loadOrCreateCredentials(stateDir, systemRandom, systemClock.now());
  if (!isLoopbackBind(bind) && !chosenToken && !password && !creds.password && !creds.tokenImportedFrom) {
    // Exposing the gateway beyond this host must be a decision, not a side effect of a generated secret.
    process.stderr.write(
      `refusing to listen on ${bind} (${resolveBindHost(bind)}) without authentication you chose: pass --token-file <path> or --password-file <path> ` +
        `(mode 0600; \`(umask 077; clawgate gateway token > <path>)\` writes the generated token), set CLAWGATE_GATEWAY_TOKEN, or bind to loopback\n`,
    );
    return 1;
  }
  const publicHost = base.publicUrl ? new URL(base.publicUrl).hostname.replace(/^\[|\]$/g, '') : undefined;
  // A generated certificate names every address a client may use (pinning clients ignore names, others do not).
  const names = [resolveBindHost(bind), ...(publicHost ? [publicHost] : []), ...(isWildcard(resolveBindHost(bind)) ? lanAddresses() : [])];
  const tls = loadTls(settings.tls, stateDir, { generate: true, extraNames: names });
  const config: GatewayConfig = {
    ...base,
    token: chosenToken ?? creds.token,
    password: password ?? creds.password,
    ownerCredential: creds.owner,
    tls: tls.material,
    automations: automationsConfig(settings.file.automations),
  };
  const log = jsonLogger(process.stderr);
  const { store, bus, limiter, where } = await openConfiguredStore(storeChoice, stateDir, {
    clock: systemClock,
    random: systemRandom,
    log,
    rateLimit: config.rateLimit,
  });
  let running: Awaited<ReturnType<typeof startGateway>>;
  try {
    running = await startGateway({ config, store, bus, limiter, log, host: resolveBindHost(bind) });
  } catch (err) {
    await bus?.close();
    await store.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') {
      process.stderr.write(`port ${config.port} is already in use on ${bind}: stop the other process or pass --port <n>\n`);
      return 1;
    }
    throw err;
  }
  const { server } = running;
  writeRuntimeInfo(stateDir, {
    url: server.url,
    pid: process.pid,
    startedAtMs: systemClock.now(),
    ...(server.tlsFingerprint ? { tlsFingerprint: server.tlsFingerprint } : {}),
    ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}),
  });
  process.stdout.write(
    [
      `clawgate gateway listening on ${server.url} (state: ${stateDir}, store: ${storeChoice.kind} ${where})`,
      created
        ? `generated a gateway token and an owner credential in ${join(stateDir, 'credentials.json')} (mode 0600)`
        : `using the credentials in ${join(stateDir, 'credentials.json')}`,
      'connect a client:  pass the gateway token (`clawgate gateway token` prints it) as auth.token; it grants read and write,',
      '                   admin and pairing need the owner (approve the device: clawgate devices approve <requestId>)',
      `  e.g. OPENCLAW_GATEWAY_URL=${server.url} OPENCLAW_GATEWAY_TOKEN="$(npx clawgate gateway token)" openclaw gateway call health --json`,
      '                   (environment, not --token: a command line is readable by every local user)',
      'local CLI:         `clawgate call health` uses the owner credential from the state dir',
      `control UI:        ${server.url.replace(/^ws/, 'http')}/  (\`clawgate dashboard\` prints a one-time sign-in link)`,
      `health:            ${server.url.replace(/^ws/, 'http')}/healthz`,
      ...(server.tlsFingerprint
        ? [
            `tls:               ${tls.created ? 'generated a self-signed certificate' : 'serving'} ${config.tls?.certPath ?? ''}`,
            `  SHA-256 fingerprint ${server.tlsFingerprint} (setup codes carry it; other clients pass --tls-fingerprint)`,
          ]
        : []),
      ...(config.publicUrl ? [`advertised URL:    ${config.publicUrl} (setup codes and links point here; \`clawgate doctor\` checks it)`] : []),
      '',
    ].join('\n'),
  );
  log.info('gateway started', { url: server.url, stateDir, store: storeChoice.kind });

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      server.close().then(resolve, (err) => {
        log.error('error while stopping', { err: String(err) });
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  // The recorded address is only a hint, but a stale one invites whoever takes the port next.
  removeRuntimeInfo(stateDir, process.pid);
  log.info('gateway stopped cleanly');
  return 0;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function lanAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => !a.internal)
    .map((a) => a.address.split('%')[0] as string);
}

export function gatewayToken(args: string[]): number {
  const { values } = parse(args, { 'state-dir': { type: 'string' } });
  const dir = resolveStateDir(values['state-dir'] as string | undefined);
  const creds = readCredentials(dir);
  if (!creds) {
    process.stderr.write(`no credentials in ${dir}: start the gateway once (clawgate gateway run) to generate them\n`);
    return 1;
  }
  process.stdout.write(`${creds.token}\n`);
  return 0;
}

export function gatewayKey(args: string[]): number {
  const { values } = parse(args, { 'state-dir': { type: 'string' }, json: { type: 'boolean' } });
  const dir = resolveStateDir(values['state-dir'] as string | undefined);
  const fingerprint = readGatewayKeyFingerprint(dir);
  if (!fingerprint) {
    process.stderr.write(`no gateway key in ${dir}: start the gateway once (clawgate gateway run) to generate it\n`);
    return 1;
  }
  process.stdout.write(values.json ? `${JSON.stringify({ fingerprint, path: join(dir, GATEWAY_KEY_FILE) })}\n` : `${fingerprint}\n`);
  return 0;
}

/**
 * `clawgate gateway run | token | key`: the gateway process itself and what it keeps in its
 * state dir.
 */
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { startGateway } from '../app.js';
import { type GatewayConfig, isLoopbackBind, resolveBindHost } from '../core/config.js';
import { systemClock, systemRandom } from '../core/env.js';
import { GATEWAY_KEY_FILE, readGatewayKeyFingerprint } from '../server/gateway-key.js';
import { approvalsQuorumNotifyConfig } from './approvals-config.js';
import { automationsConfig } from './automations.js';
import { buildInfo } from './build-info.js';
import { GATEWAY_FLAGS, loadTls, readConfigFile, resolveGatewaySettings } from './gateway-config.js';
import { jsonLogger } from './json-logger.js';
import { openConfiguredStore, resolveStoreChoice } from './postgres.js';
import { readSecretFile } from './secret-input.js';
import { ensureStateDir, loadOrCreateCredentials, readCredentials, readRuntimeInfo, removeRuntimeInfo, resolveStateDir, writeRuntimeInfo } from './state.js';
import { startupRefusal } from './state-health.js';
import { commandHint } from './target.js';
import { parse } from './usage.js';

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
  Object.assign(config, approvalsQuorumNotifyConfig(settings.file.gateway, config.automations));
  const log = jsonLogger(process.stderr, () => systemClock.now());
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
  // A wildcard bind listens everywhere but 0.0.0.0 is no address to dial: this host's CLI dials
  // loopback, other hosts get the public URL or this host's first LAN address.
  const localUrl = dialableUrl(server.url);
  const advertised = config.publicUrl ?? lanUrl(server.url) ?? localUrl;
  writeRuntimeInfo(stateDir, {
    url: localUrl,
    ...(advertised !== localUrl ? { advertisedUrl: advertised } : {}),
    ...(settings.tokenSource ? { tokenSource: settings.tokenSource } : {}),
    pid: process.pid,
    startedAtMs: systemClock.now(),
    ...(server.tlsFingerprint ? { tlsFingerprint: server.tlsFingerprint } : {}),
    ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}),
  });
  process.stdout.write(
    [
      `clawgate gateway listening on ${server.url} (state: ${stateDir}, store: ${storeChoice.kind} ${where})`,
      ...(advertised !== localUrl ? [`reachable at:      ${advertised} (other hosts; this host: ${localUrl})`] : []),
      created
        ? `generated a gateway token and an owner credential in ${join(stateDir, 'credentials.json')} (mode 0600)`
        : `using the credentials in ${join(stateDir, 'credentials.json')}`,
      `connect a client:  pass the gateway token (\`${commandHint({ 'state-dir': values['state-dir'] }, 'gateway token')}\` prints it) as auth.token; it grants read and write,`,
      '                   admin and pairing need the owner (approve the device: clawgate devices approve <requestId>)',
      `  e.g. OPENCLAW_GATEWAY_URL=${advertised} OPENCLAW_GATEWAY_TOKEN="$(npx ${commandHint({ 'state-dir': values['state-dir'] }, 'gateway token')})" openclaw gateway call health --json`,
      '                   (environment, not --token: a command line is readable by every local user)',
      `local CLI:         \`${commandHint({ 'state-dir': values['state-dir'] }, 'call health')}\` uses the owner credential from the state dir`,
      `control UI:        ${localUrl.replace(/^ws/, 'http')}/  (\`${commandHint({ 'state-dir': values['state-dir'] }, 'dashboard')}\` prints a one-time sign-in link)`,
      `health:            ${localUrl.replace(/^ws/, 'http')}/healthz`,
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
  // Which build runs: dist/clawgate.cjs (the single-file build bin/clawgate.js prefers, and
  // whether its code cache was used) or the tsc modules.
  log.info('gateway started', { url: server.url, stateDir, store: storeChoice.kind, ...buildInfo() });

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

/** The listening URL with a wildcard host replaced by loopback (the same port serves it). */
function dialableUrl(url: string): string {
  const u = new URL(url);
  if (u.hostname === '0.0.0.0') u.hostname = '127.0.0.1';
  else if (u.hostname === '[::]') u.hostname = '[::1]';
  return u.toString().replace(/\/$/, '');
}

/** For a wildcard bind: the listening URL at this host's first non-internal IPv4 address (null when it has none). */
function lanUrl(url: string): string | null {
  const u = new URL(url);
  if (u.hostname !== '0.0.0.0' && u.hostname !== '[::]') return null;
  const v4 = Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .find((a) => a.family === 'IPv4' && !a.internal);
  if (!v4) return null;
  u.hostname = v4.address;
  return u.toString().replace(/\/$/, '');
}

function lanAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => !a.internal)
    .map((a) => a.address.split('%')[0] as string);
}

/**
 * The gateway token the gateway running from this state dir accepts: the generated (or imported)
 * one in credentials.json, or the one it was started with when that sits in a file (--token-file,
 * the config file). A token it took from its environment or standard input is nowhere to read:
 * say so instead of printing a token it would refuse.
 */
export function gatewayToken(args: string[]): number {
  const { values } = parse(args, { 'state-dir': { type: 'string' } });
  const dir = resolveStateDir(values['state-dir'] as string | undefined);
  const runtime = readRuntimeInfo(dir);
  const source = runtime?.tokenSource;
  if (source?.kind === 'file') {
    process.stdout.write(`${readSecretFile(source.path, 'token')}\n`);
    return 0;
  }
  if (source?.kind === 'config') {
    const token = readConfigFile(source.path).gateway?.auth?.token;
    if (typeof token !== 'string' || token === '') {
      process.stderr.write(`the running gateway (pid ${runtime?.pid}) took its token from ${source.path}, which no longer holds gateway.auth.token\n`);
      return 1;
    }
    process.stdout.write(`${token}\n`);
    return 0;
  }
  if (source) {
    const from =
      source.kind === 'env'
        ? `in its environment (${source.name})`
        : source.kind === 'stdin'
          ? 'on standard input (--token-stdin)'
          : 'on its command line (--token)';
    process.stderr.write(
      `the running gateway (pid ${runtime?.pid}) accepts the token it was given ${from}, which is not stored anywhere this command can read; ` +
        'use that token (the generated one in credentials.json is not accepted while it runs so)\n',
    );
    return 1;
  }
  const creds = readCredentials(dir);
  if (!creds) {
    process.stderr.write(`no credentials in ${dir}: start the gateway once (${commandHint(values, 'gateway run', ['state-dir'])}) to generate them\n`);
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

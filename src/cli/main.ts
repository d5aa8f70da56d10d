/**
 * `clawgate` — one binary, verbs close to OpenClaw's. Thin: parse flags, call the core or a
 * gateway, format output. Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { startGateway } from '../app.js';
import { ConnectError, connectGateway, GatewayRequestError } from '../client/connection.js';
import { DEFAULTS, type GatewayConfig, isLoopbackBind, resolveBindHost } from '../core/config.js';
import { systemClock, systemRandom } from '../core/env.js';
import type { Logger } from '../core/gateway.js';
import { SqliteStore } from '../store/sqlite.js';
import { ensureStateDir, loadOrCreateCredentials, readCredentials, readRuntimeInfo, resolveStateDir, writeRuntimeInfo } from './state.js';

export class UsageError extends Error {}

const HELP = `clawgate — a self-hosted gateway for pairing and authorizing devices

Usage:
  clawgate gateway run [--port 18789] [--bind loopback|lan|<address>] [--state-dir <dir>]
                       [--token <t>] [--password <p>] [--config <file>]
  clawgate gateway token [--state-dir <dir>]     print the shared gateway token
  clawgate call <method> [--params <json>] [--url <ws-url>] [--token <t>] [--json]
  clawgate devices list [--json]
  clawgate devices approve <requestId|deviceId> | reject <requestId> | remove <deviceId>
  clawgate devices rename <deviceId> <name>
  clawgate devices rotate --device <id> --role operator|node [--scope <s>…]
  clawgate devices revoke --device <id> --role operator|node
  clawgate audit [--json] [--verify] [--limit <n>]
  clawgate qr [--profile operator|node|operator+node] [--scopes <s>…] [--label <name>] [--ttl 10m]
              [--url <gateway-url>] [--public-url <url>] [--json]
                                               mint a setup code (QR) that pairs one new device
  clawgate qr --list | --revoke <setupId> [--json]
  clawgate help

Every command takes --state-dir (else CLAWGATE_STATE_DIR, else ~/.clawgate).
Commands that talk to a gateway use --url > CLAWGATE_URL > the running gateway recorded in the
state dir > ws://127.0.0.1:18789, and authenticate with --token > CLAWGATE_TOKEN > the owner
credential in the state dir.`;

export function parse(
  args: string[],
  options: ParseArgsConfig['options'],
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: r.values as Record<string, string | boolean | string[] | undefined>, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function jsonLogger(stream: NodeJS.WriteStream): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) =>
    stream.write(`${JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields })}\n`);
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

interface FileConfig {
  gateway?: {
    port?: number;
    bind?: string;
    auth?: { token?: string; password?: string };
    autoApproveLocal?: boolean;
    handshakeTimeoutMs?: number;
    tickIntervalMs?: number;
    pendingTtlMs?: number;
    rateLimit?: Partial<GatewayConfig['rateLimit']>;
    trustedProxies?: string[];
    untrustedForwarded?: 'refuse' | 'ignore';
  };
}

function readConfigFile(path: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as FileConfig;
  } catch (err) {
    throw new UsageError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

async function gatewayRun(args: string[]): Promise<number> {
  const { values } = parse(args, {
    port: { type: 'string' },
    bind: { type: 'string' },
    'state-dir': { type: 'string' },
    token: { type: 'string' },
    password: { type: 'string' },
    config: { type: 'string' },
  });
  const file = values.config ? readConfigFile(values.config as string) : {};
  const g = file.gateway ?? {};
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  const portText = (values.port as string | undefined) ?? process.env.CLAWGATE_PORT;
  const port = portText !== undefined ? Number(portText) : (g.port ?? DEFAULTS.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be a whole number from 0 to 65535, got ${portText}`);
  const bind = (values.bind as string | undefined) ?? g.bind ?? DEFAULTS.bind;

  ensureStateDir(stateDir);
  const { creds, created } = loadOrCreateCredentials(stateDir, systemRandom, systemClock.now());
  const chosenToken = (values.token as string | undefined) ?? g.auth?.token;
  const password = (values.password as string | undefined) ?? g.auth?.password;
  if (!isLoopbackBind(bind) && !chosenToken && !password) {
    // Exposing the gateway beyond this host must be a decision, not a side effect of a generated secret.
    process.stderr.write(
      `refusing to listen on ${bind} (${resolveBindHost(bind)}) without authentication you chose: pass --token <t> or --password <p> ` +
        `(or --token "$(clawgate gateway token)" to use the generated one), or bind to loopback\n`,
    );
    return 1;
  }
  const token = chosenToken ?? creds.token;
  const config: GatewayConfig = {
    ...DEFAULTS,
    port,
    bind,
    stateDir,
    token,
    password,
    ownerCredential: creds.owner,
    autoApproveLocal: g.autoApproveLocal ?? DEFAULTS.autoApproveLocal,
    handshakeTimeoutMs: g.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
    tickIntervalMs: g.tickIntervalMs ?? DEFAULTS.tickIntervalMs,
    pendingTtlMs: g.pendingTtlMs ?? DEFAULTS.pendingTtlMs,
    rateLimit: { ...DEFAULTS.rateLimit, ...g.rateLimit },
    trustedProxies: g.trustedProxies ?? DEFAULTS.trustedProxies,
    untrustedForwarded: g.untrustedForwarded ?? DEFAULTS.untrustedForwarded,
  };
  const log = jsonLogger(process.stderr);
  const store = new SqliteStore(join(stateDir, 'clawgate.sqlite'));
  let running: Awaited<ReturnType<typeof startGateway>>;
  try {
    running = await startGateway({ config, store, log, host: resolveBindHost(bind) });
  } catch (err) {
    await store.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') {
      process.stderr.write(`port ${port} is already in use on ${bind}: stop the other process or pass --port <n>\n`);
      return 1;
    }
    throw err;
  }
  const { server } = running;
  writeRuntimeInfo(stateDir, { url: server.url, pid: process.pid, startedAtMs: systemClock.now() });
  process.stdout.write(
    [
      `clawgate gateway listening on ${server.url} (state: ${stateDir}, store: sqlite)`,
      created
        ? `generated a gateway token and an owner credential in ${join(stateDir, 'credentials.json')} (mode 0600)`
        : `using the credentials in ${join(stateDir, 'credentials.json')}`,
      'connect a client:  pass the gateway token (`clawgate gateway token` prints it) as auth.token',
      `  e.g. openclaw gateway call health --url ${server.url} --token "$(npx clawgate gateway token)" --json`,
      'local CLI:         `clawgate call health` uses the owner credential from the state dir',
      `health:            http://${server.host.includes(':') ? `[${server.host}]` : server.host}:${server.port}/healthz`,
      '',
    ].join('\n'),
  );
  log.info('gateway started', { url: server.url, stateDir });

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
  log.info('gateway stopped cleanly');
  return 0;
}

function gatewayToken(args: string[]): number {
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

/** Where and how a CLI command reaches a gateway (ARCHITECTURE §4). */
export function resolveTarget(values: Record<string, unknown>): { url: string; token: string | undefined; password: string | undefined } {
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  const url = (values.url as string | undefined) ?? process.env.CLAWGATE_URL ?? readRuntimeInfo(stateDir)?.url ?? `ws://127.0.0.1:${DEFAULTS.port}`;
  const password = values.password as string | undefined;
  let token = (values.token as string | undefined) ?? process.env.CLAWGATE_TOKEN;
  if (!token && !password) token = readCredentials(stateDir)?.owner;
  return { url, token, password };
}

async function call(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    params: { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    password: { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
    timeout: { type: 'string' },
  });
  const method = positionals[0];
  if (!method) throw new UsageError('usage: clawgate call <method> [--params <json>]');
  let params: unknown;
  if (values.params !== undefined) {
    try {
      params = JSON.parse(values.params as string);
    } catch (err) {
      throw new UsageError(`--params is not valid JSON: ${(err as Error).message}`);
    }
  }
  const target = resolveTarget(values);
  if (!target.token && !target.password) {
    process.stderr.write('no credential: pass --token, set CLAWGATE_TOKEN, or run on the gateway host (owner credential in the state dir)\n');
    return 1;
  }
  const conn = await connectGateway({
    url: target.url,
    auth: target.password ? { password: target.password } : { token: target.token },
    scopes: ['operator.admin'],
    client: { id: 'cli', mode: 'cli' },
  });
  try {
    const result = await conn.request(method, params, values.timeout ? Number(values.timeout) : 30_000);
    process.stdout.write(`${JSON.stringify(result, null, values.json ? 0 : 2)}\n`);
    return 0;
  } finally {
    await conn.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      process.stdout.write(`${HELP}\n`);
      return cmd ? 0 : 2;
    }
    if (cmd === 'gateway' && (sub === 'run' || sub === undefined)) return await gatewayRun(rest);
    if (cmd === 'gateway' && sub === 'token') return gatewayToken(rest);
    if (cmd === 'call') return await call(sub === undefined ? rest : [sub, ...rest]);
    // Client-only commands load on demand: `gateway run` starts faster without them (cold start).
    if (cmd === 'devices') return await (await import('./devices.js')).devicesCommand(sub, rest);
    if (cmd === 'audit') return await (await import('./devices.js')).auditCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'qr') return await (await import('./qr.js')).qrCommand(sub === undefined ? rest : [sub, ...rest]);
    throw new UsageError(`unknown command: ${[cmd, sub].filter(Boolean).join(' ')} (see clawgate help)`);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof ConnectError || err instanceof GatewayRequestError) {
      const e = err instanceof ConnectError ? err.error : err.error;
      const next = (e?.details as { nextStep?: string } | undefined)?.nextStep;
      process.stderr.write(`error: ${err.message}${e?.details?.code ? ` [${e.details.code}]` : ''}\n${next ? `next: ${next}\n` : ''}`);
      return 1;
    }
    process.stderr.write(`error: ${(err as Error).message}\n`);
    return 1;
  }
}

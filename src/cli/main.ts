/**
 * `clawgate` — one binary, verbs close to OpenClaw's. Thin: parse flags, call the core or a
 * gateway, format output. Exit codes: 0 ok, 1 failure, 2 usage, 3 pairing request pending (--no-wait).
 */
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { startGateway } from '../app.js';
import { ConnectError, GatewayRequestError } from '../client/connection.js';
import { DEFAULTS, type GatewayConfig, isLoopbackBind, resolveBindHost } from '../core/config.js';
import { systemClock, systemRandom } from '../core/env.js';
import type { Logger } from '../core/logger.js';
import { normalizeFingerprint } from '../protocol/fingerprint.js';
import { audienceOf, normalizeGatewayKeyFingerprint } from '../protocol/gateway-proof.js';
import { printableLines } from '../protocol/text.js';
import { GATEWAY_KEY_FILE, readGatewayKeyFingerprint } from '../server/gateway-key.js';
import { approvalsQuorumNotifyConfig } from './approvals-config.js';
import { automationsConfig, channelsCommand, chatCommand, cronCommand, sessionsCommand } from './automations.js';
import { jsonParams, parseGatewayCommand, positiveIntFlag, withGateway } from './common.js';
import { GATEWAY_FLAGS, loadTls, resolveGatewaySettings } from './gateway-config.js';
import { NODE_RUN_HELP, nodeCommand } from './node-run.js';
import { migrateCommand, openConfiguredStore, resolveStoreChoice } from './postgres.js';
import { readSecretEnv, readSecretFlag } from './secret-input.js';
import {
  ensureStateDir,
  isOwnerCredential,
  loadOrCreateCredentials,
  readCredentials,
  readRuntimeInfo,
  removeRuntimeInfo,
  resolveStateDir,
  writeRuntimeInfo,
} from './state.js';
import { startupRefusal } from './state-health.js';

export class UsageError extends Error {}

const HELP = `clawgate — a self-hosted gateway for pairing and authorizing devices

Usage:
  clawgate gateway run [--port 18789] [--bind loopback|lan|<address>] [--state-dir <dir>]
                       [--token-file <f> | --token-stdin] [--password-file <f> | --password-stdin]
                       [--config <file>]
                       [--public-url wss://host[/path]] [--context-path /path]
                       [--tls | --tls-cert <pem> --tls-key <pem>] [--trusted-proxy <addr|cidr>…]
                       [--store sqlite|postgres] [--postgres-url <url>] [--metrics]
  clawgate gateway token [--state-dir <dir>]     print the shared gateway token
  clawgate gateway key [--state-dir <dir>] [--json]
                                               print the gateway key fingerprint (clients pass it
                                               as --gateway-key to know they reached this gateway)
  clawgate gateway install-service --print [gateway run flags] [--user <u>]
                                               print a systemd unit for this gateway
  clawgate doctor [gateway run flags] [--tls-fingerprint <sha256>] [--json]
                                               check config, store, TLS, trusted proxies, and that
                                               the advertised URL reaches the gateway
  clawgate call <method> [--params <json>] [--url <ws-url>] [--token-file <f> | --token-stdin] [--json]
  clawgate devices list [--json]
  clawgate devices approve <requestId|deviceId> | reject <requestId> | remove <deviceId>
  clawgate devices rename <deviceId> <name>
  clawgate explain <deviceId|name|requestId> [--method <m>] [--params <json>] [--json]
                                               what a device holds, what is pending and what
                                               approving it needs; whether a call would pass
  clawgate devices rotate --device <id> --role operator|node [--scope <s>…]
                                               a connected device gets the new token pushed live
  clawgate devices revoke --device <id> --role operator|node
  clawgate audit [--json] [--limit <n>]
  clawgate audit --verify [--state-dir <dir>] [--store postgres --postgres-url <url>] [--json]
                                               check the log against the head signed into the
                                               state dir (reads the store; no gateway needed)
  clawgate nodes list | pending | approve <requestId|node> | reject <requestId|node> [--json]
  clawgate nodes describe <node> | rename <node> <name> | remove <node> [--json]
  clawgate nodes invoke --node <node> --command <cmd> [--params <json>] [--timeout <ms>] [--json]
                                               <node> is a node id or its name
  clawgate qr [--profile operator|node|operator+node] [--scopes <s>…] [--label <name>] [--ttl 10m]
              [--url <gateway-url>] [--public-url <url>] [--json]
                                               mint a setup code (QR) that pairs one new device
  clawgate qr --list | --revoke <setupId> [--json]
  clawgate dashboard [--ttl 2m] [--json]         print a one-time sign-in link for the Control UI
  clawgate pair --code-file <f> | --code-stdin | - [--name <n>] [--node] [--url <gateway-url>] [--json]
                                               redeem a setup code (or oc-pair:// link) on this machine
                                               (client side); also CLAWGATE_SETUP_CODE. \`pair <code>\` works
                                               but shows the code to every local user (ps)
  clawgate status --client [--offline] [--json]  stored gateways, roles, scopes and connection state
  clawgate cron add --name <n> (--cron "<m h dom mon dow>" [--tz <zone>] | --every <10s|5m|1h>)
                    (--send <channel> --content <text> | --session <key> --text <text> [--spawn])
  clawgate cron list | remove <job> | run <job> | runs <job> [--json]
  clawgate channels add webhook --name <n> --url <webhook-url> [--username <u>] [--gateway-url <ws-url>]
                                               (here --url is the webhook's; the gateway is --gateway-url)
  clawgate channels remove <name>
  clawgate channels list | deliveries [--channel <n>] [--status <s>] | dead-letters [--json]
  clawgate sessions list | create [<key>] | spawn <parentKey> [<key>] [--json]
  clawgate chat send <sessionKey> <text> [--idempotency-key <k>] | history <sessionKey> [--limit <n>] [--before <seq>] [--json]
${NODE_RUN_HELP}
  clawgate import openclaw [--from <openclaw-state-dir>] [--dry-run] [--merge] [--json]
                          [--store sqlite|postgres] [--postgres-url <url>]
                                               take over OpenClaw's paired devices, their tokens (hashed),
                                               approved node commands and gateway token/password
  clawgate migrate --to postgres --postgres-url <url> [--json]
                                               copy the SQLite state dir into an empty PostgreSQL database
  clawgate help

Every command takes --state-dir (else CLAWGATE_STATE_DIR, else ~/.clawgate).
Commands that talk to a gateway use --url > CLAWGATE_URL > the running gateway recorded in the
state dir > ws://127.0.0.1:18789, and authenticate with --token-file <f> / --token-stdin (or the
--password-… forms) > CLAWGATE_TOKEN > CLAWGATE_PASSWORD > the owner credential in the state dir.
Secrets never belong on a command line (every local user can read it): --token <t> and
--password <p> still work but print a warning. \`gateway run\` reads CLAWGATE_GATEWAY_TOKEN /
CLAWGATE_GATEWAY_PASSWORD (or gateway.auth in --config). The gateway token alone grants
operator.read and operator.write; admin and pairing need the owner credential or an approved device.
Before sending anything they check that the server proves the gateway key: --gateway-key
<fingerprint> > CLAWGATE_GATEWAY_KEY > the state dir's gateway-key.pem (a remote gateway needs
--gateway-key). The owner credential is never sent, only proven.
For a wss:// gateway with a self-signed certificate pass
--tls-fingerprint <sha256> (or CLAWGATE_TLS_FINGERPRINT); the local gateway's is pinned automatically.
\`node run\` is a client of a gateway, not its operator: its own state dir (--state-dir, else
CLAWGATE_NODE_STATE_DIR, else ~/.clawgate-node), the gateway token only from --token-file,
--token-stdin or CLAWGATE_NODE_TOKEN (password: CLAWGATE_NODE_PASSWORD), never the owner
credential (docs/node-host.md).
Away from the gateway host the CLI is a device: its key and device tokens live in <state-dir>/client/
(\`clawgate pair\` stores them too). A gateway token for a remote gateway files a pairing request; the
CLI prints its id, confirmation code and approve command and waits (--no-wait: exit 3); later
commands use the stored device token.
A setup code carries a bootstrap token: \`pair\` and \`node run\` read it from --code-file (mode 0600),
--code-stdin or CLAWGATE_SETUP_CODE, so it never needs the command line.`;

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

async function gatewayRun(args: string[]): Promise<number> {
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

function gatewayKey(args: string[]): number {
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

interface Target {
  url: string;
  token: string | undefined;
  password: string | undefined;
  /** The owner credential, to be proven (never sent) to a gateway that proved `gatewayKey`. */
  owner: string | undefined;
  /** The key the server must prove before anything is sent: a fingerprint; null: required but none known; undefined: not checked. */
  gatewayKey: string | null | undefined;
  tlsFingerprint: string | undefined;
}
/** Secrets are read once per parsed command line: standard input cannot be read twice. */
const resolvedTargets = new WeakMap<Record<string, unknown>, Target>();

/** Where and how a CLI command reaches a gateway (ARCHITECTURE §4). */
export function resolveTarget(values: Record<string, unknown>): Target {
  const known = resolvedTargets.get(values);
  if (known) return known;
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  // gateway.json only says where to dial; the gateway key decides whether to talk.
  const runtime = readRuntimeInfo(stateDir);
  const url = (values.url as string | undefined) ?? process.env.CLAWGATE_URL ?? runtime?.url ?? `ws://127.0.0.1:${DEFAULTS.port}`;
  // Flags that carry a password win over a token from the environment: the command line is the more specific choice.
  const passwordFlag = readSecretFlag(values, 'password', 'CLAWGATE_PASSWORD');
  const tokenFlag = readSecretFlag(values, 'token', 'CLAWGATE_TOKEN');
  if (tokenFlag && passwordFlag) throw new UsageError('pass a token or a password, not both');
  let token = tokenFlag?.value;
  let password = passwordFlag?.value;
  if (!token && !password) {
    token = readSecretEnv(['CLAWGATE_TOKEN'])?.value;
    if (!token) password = readSecretEnv(['CLAWGATE_PASSWORD'])?.value;
  }
  let owner: string | undefined;
  if (token !== undefined && isOwnerCredential(token)) {
    owner = token;
    token = undefined;
  }
  if (!token && !password && !owner) owner = readCredentials(stateDir)?.owner;
  const keyText = (values['gateway-key'] as string | undefined) ?? process.env.CLAWGATE_GATEWAY_KEY;
  let key: string | null | undefined;
  if (keyText !== undefined) {
    key = normalizeGatewayKeyFingerprint(keyText);
    if (!key) throw new UsageError(`--gateway-key must be a SHA-256 fingerprint (64 hex digits, colons allowed), got ${keyText}`);
  } else key = readGatewayKeyFingerprint(stateDir);
  // A shared secret may still go to a gateway on this host whose key nobody recorded (an SSH
  // tunnel's local end); to any other host it goes only after the server proved a known key. The
  // owner credential always needs a proven key (gateway-session.ts refuses without one).
  if (key === null && owner === undefined && audienceOf(url)?.includes('://loopback:')) key = undefined;
  // The running gateway's own certificate is pinned automatically when we talk to it by the URL it recorded.
  const fpText = (values['tls-fingerprint'] as string | undefined) ?? process.env.CLAWGATE_TLS_FINGERPRINT;
  let tlsFingerprint: string | undefined;
  if (fpText !== undefined) {
    const fp = normalizeFingerprint(fpText);
    if (!fp) throw new UsageError(`--tls-fingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed), got ${fpText}`);
    tlsFingerprint = fp;
  } else if (runtime?.tlsFingerprint && runtime.url === url) tlsFingerprint = runtime.tlsFingerprint;
  const target: Target = { url, token, password, owner, gatewayKey: key, tlsFingerprint };
  resolvedTargets.set(values, target);
  return target;
}

async function call(args: string[]): Promise<number> {
  const { values, positionals } = parseGatewayCommand(args, { params: { type: 'string' }, timeout: { type: 'string' } });
  const method = positionals[0];
  if (!method) throw new UsageError('usage: clawgate call <method> [--params <json>]');
  const params = jsonParams(values.params);
  const timeoutMs = positiveIntFlag(values, 'timeout') ?? 30_000;
  try {
    return await withGateway(values, async (conn) => {
      const result = await conn.request(method, params, timeoutMs);
      // JSON escapes C0 controls but not C1 or bidi characters; the escape keeps it the same JSON.
      process.stdout.write(`${printableLines(JSON.stringify(result, null, values.json ? 0 : 2))}\n`);
      return 0;
    });
  } catch (err) {
    // `call` reports a missing credential as a failure of the call (exit 1), like any other.
    if (!(err instanceof UsageError) || !err.message.startsWith('no credential')) throw err;
    process.stderr.write(`${err.message}\n`);
    return 1;
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
    if (cmd === 'gateway' && sub === 'key') return gatewayKey(rest);
    // Client-only commands load on demand: `gateway run` starts faster without them (cold start).
    if (cmd === 'gateway' && sub === 'install-service') return (await import('./remote.js')).installServiceCommand(rest);
    if (cmd === 'doctor') return await (await import('./remote.js')).doctorCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'call') return await call(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'devices') return await (await import('./devices.js')).devicesCommand(sub, rest);
    if (cmd === 'nodes') return await (await import('./nodes.js')).nodesCommand(sub, rest);
    if (cmd === 'explain') return await (await import('./explain.js')).explainCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'audit') return await (await import('./devices.js')).auditCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'qr') return await (await import('./qr.js')).qrCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'dashboard') return await (await import('./dashboard.js')).dashboardCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'pair') return await (await import('./client.js')).pairCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'status') return await (await import('./client.js')).statusCommand(sub === undefined ? rest : [sub, ...rest]);
    if (cmd === 'cron') return await cronCommand(sub, rest);
    if (cmd === 'channels') return await channelsCommand(sub, rest);
    if (cmd === 'sessions') return await sessionsCommand(sub, rest);
    if (cmd === 'chat') return await chatCommand(sub, rest);
    if (cmd === 'node') return await nodeCommand(sub, rest);
    if (cmd === 'import') return await (await import('./import.js')).importCommand(sub, rest);
    if (cmd === 'migrate') return await migrateCommand(sub === undefined ? rest : [sub, ...rest]);
    throw new UsageError(`unknown command: ${[cmd, sub].filter(Boolean).join(' ')} (see clawgate help)`);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${printableLines(err.message)}\n`);
      return 2;
    }
    const json = argv.includes('--json');
    const status = (await import('./gateway-session.js')).reportClientFailure(err, json);
    if (status !== null) return status;
    if (err instanceof ConnectError || err instanceof GatewayRequestError) {
      const e = err instanceof ConnectError ? err.error : err.error;
      const next = (e?.details as { nextStep?: string } | undefined)?.nextStep;
      // A gateway's message can quote what a client named: escaped like every other listing.
      process.stderr.write(printableLines(`error: ${err.message}${e?.details?.code ? ` [${e.details.code}]` : ''}\n${next ? `next: ${next}\n` : ''}`));
      return 1;
    }
    process.stderr.write(`error: ${printableLines((err as Error).message)}\n`);
    return 1;
  }
}

/**
 * `clawgate node run` — start a headless node host (src/node-host/). Parses flags, prepares the
 * state dir, and runs until SIGINT/SIGTERM (exit 0) or a refusal retrying cannot fix (exit 1).
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { GatewayRecord } from '@clawgate/client';
import { nodePlatform, normalizeGatewayUrl } from '@clawgate/client';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { normalizeGatewayKeyFingerprint } from '@clawgate/protocol/gateway-proof';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { printableLines } from '@clawgate/protocol/text';
import { hasNodeHostState, migrateNodeHostState } from '../companion/migrate.js';
import { systemClock, systemRandom } from '../core/env.js';
import { type ExecPolicyMode, ensureAllowlistFile } from '../node-host/exec-policy.js';
import { NodeHost } from '../node-host/host.js';
import { NodeState, resolveNodeStateDir } from '../node-host/state.js';
import { clientStore } from './client-store.js';
import { nodeCommandFlags } from './node-flags.js';
import { readSecretEnv, readSecretFlag, readSetupCode, SECRET_FLAGS, SETUP_CODE_FLAGS } from './secret-input.js';
import { parse, UsageError } from './usage.js';

/** `clawgate node identity`: the public half of the node's key, for a gateway checking it over SSH. */
export function nodeIdentityCommand(args: string[]): number {
  const { values, positionals } = parse(args, { 'state-dir': { type: 'string' }, json: { type: 'boolean' } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const dir = resolveNodeStateDir(values['state-dir'] as string | undefined);
  // Read only: asking for the identity must never create one (a new key would answer for nothing).
  const id = new NodeState(dir).readIdentity();
  if (!id) {
    process.stderr.write(`error: no node identity in ${printableLines(dir)} yet; run clawgate node run once to create it\n`);
    return 1;
  }
  if (values.json === true) process.stdout.write(`${JSON.stringify(id)}\n`);
  else process.stdout.write(`device id   ${id.deviceId}\npublic key  ${id.publicKey}\n`);
  return 0;
}

export async function nodeCommand(sub: string | undefined, args: string[]): Promise<number> {
  if (sub === 'identity') return nodeIdentityCommand(args);
  if (sub !== 'run') throw new UsageError('usage: clawgate node run …  (clawgate node run --help)');
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    ...SECRET_FLAGS,
    pair: { type: 'string' },
    ...SETUP_CODE_FLAGS,
    name: { type: 'string' },
    commands: { type: 'string' },
    'exec-policy': { type: 'string' },
    'state-dir': { type: 'string' },
    'tls-fingerprint': { type: 'string' },
    'gateway-key': { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const { execPolicy, commands } = nodeCommandFlags(values, 'this node host');
  // Its own variables, not CLAWGATE_TOKEN: a node host must never pick up an operator's (or the owner's) credential.
  const tokenFlag = readSecretFlag(values, 'token', 'CLAWGATE_NODE_TOKEN');
  const passwordFlag = readSecretFlag(values, 'password', 'CLAWGATE_NODE_PASSWORD');
  if (tokenFlag && passwordFlag) throw new UsageError('pass a token or a password, not both');
  let sharedToken = tokenFlag?.value;
  let password = passwordFlag?.value;
  if (!sharedToken && !password) {
    sharedToken = readSecretEnv(['CLAWGATE_NODE_TOKEN'])?.value;
    if (!sharedToken) password = readSecretEnv(['CLAWGATE_NODE_PASSWORD'])?.value;
  }
  // The code carries a bootstrap token: the file, standard input or the environment keep it off argv.
  const setupCode = readSetupCode(values, values.pair as string | undefined, '--pair <setup-code>')?.value;
  if (setupCode !== undefined && (sharedToken || password))
    throw new UsageError(
      'a setup code (--code-file, --code-stdin, --pair or CLAWGATE_SETUP_CODE) and a token or password (flags, CLAWGATE_NODE_TOKEN or CLAWGATE_NODE_PASSWORD) exclude each other: a setup code is the credential',
    );

  // Gateway-supplied text (request ids, messages, hints) reaches these lines: escape what a terminal would obey.
  const out = (line: string) => process.stdout.write(`${printableLines(line)}\n`);
  const err = (line: string) => process.stderr.write(`${printableLines(line)}\n`);
  const dir = resolveNodeStateDir(values['state-dir'] as string | undefined);
  if (!hasNodeHostState(dir) && (await pairedRecords(dir)) > 0) {
    // The dir holds a device paired by `clawgate pair` or the companion: be that device's node side.
    if (password) throw new UsageError('--password cannot be used with a device paired by `clawgate pair`; pass the gateway token or a setup code');
    for (const flag of ['tls-fingerprint', 'gateway-key'] as const) {
      if (values[flag] !== undefined)
        throw new UsageError(
          `--${flag}: ${dir} holds a device paired by \`clawgate pair\`, whose record already pins the gateway (from its setup code); pair again to change it`,
        );
    }
    const { runCompanion } = await import('./companion.js');
    return runCompanion({
      stateDir: dir,
      sides: { operator: false, node: true },
      commands,
      execPolicy,
      code: setupCode,
      token: sharedToken,
      url: values.url as string | undefined,
      name: (values.name as string | undefined) ?? hostname(),
      allowlistDir: dir,
    });
  }
  const state = NodeState.open(dir);
  const lock = state.lock();
  if (!lock.ok) {
    err(`another clawgate node run (pid ${lock.holderPid}) is using ${state.dir}; stop it, or pass a different --state-dir`);
    return 1;
  }
  try {
    return await runWithState(state, values, { execPolicy, commands, sharedToken, password, setupCode, out, err });
  } finally {
    lock.release();
  }
}

interface RunSettings {
  execPolicy: ExecPolicyMode;
  commands: string[];
  sharedToken: string | undefined;
  password: string | undefined;
  setupCode: string | undefined;
  out(line: string): void;
  err(line: string): void;
}

async function runWithState(state: NodeState, values: Record<string, unknown>, settings: RunSettings): Promise<number> {
  const { execPolicy, commands, sharedToken, password, setupCode, out, err } = settings;
  const { identity, instanceId, created } = state.loadOrCreateIdentity(systemRandom);
  if (created) out(`created node identity ${identity.deviceId} in ${state.dir}`);
  const allowlist = ensureAllowlistFile(state.dir);
  if (allowlist.created) out(`created ${allowlist.path} with a default exec allowlist; edit it to allow more commands`);

  // The SDK store under <state-dir>/client/ is where this node's credentials live; the state dir's
  // own credentials.json (from older versions) is copied in once and left as it was.
  const store = clientStore(state.dir);
  await migrateNodeHostState(state.dir, store, systemClock.now());
  const creds = state.readCredentials();
  let urls: string[] = creds.bootstrap?.urls ?? (creds.gatewayUrl ? [creds.gatewayUrl] : []);
  let stored = urls[0] !== undefined && isGatewayUrl(urls[0]) ? await store.load(normalizeGatewayUrl(urls[0]).key) : null;
  if (!stored) {
    // Paired by this version: the store alone names the gateway (one record per node state dir).
    const mine = store.scan().records.filter((r) => r.deviceId === identity.deviceId);
    if (mine.length === 1 && mine[0]) {
      stored = mine[0];
      urls = [stored.url];
    }
  }
  let code: { bootstrapToken: string; expiresAtMs?: number; tlsFingerprint?: string; gatewayKey?: string } | null = null;
  if (setupCode !== undefined) {
    if (stored?.tokens.node) {
      // Restarting with the same code (a service unit, say) must not burn or need a fresh code.
      out(`already paired (node token in ${state.dir}); ignoring the setup code`);
    } else {
      const decoded = decodeSetupCode(setupCode, { nowMs: systemClock.now() });
      if (!decoded.ok) {
        err(`setup code: ${decoded.problem}`);
        return 1;
      }
      const p = decoded.payload;
      urls = [p.url, ...(p.urls ?? []).filter((u) => u !== p.url)];
      code = {
        bootstrapToken: p.bootstrapToken,
        ...(p.expiresAtMs ? { expiresAtMs: p.expiresAtMs } : {}),
        // Remote gateways: a code from a gateway serving its own certificate pins it.
        ...(p.tlsFingerprint ? { tlsFingerprint: normalizeFingerprint(p.tlsFingerprint) as string } : {}),
        // The code names the gateway's identity key: from now on nothing is sent to a server that cannot prove it.
        ...(p.gatewayKey ? { gatewayKey: p.gatewayKey } : {}),
      };
    }
  }
  if (values.url !== undefined) urls = [values.url as string];
  if (urls.length === 0)
    throw new UsageError(
      'no gateway to connect to: pass --url <ws-url> (with --token-file) or a setup code (--code-file <path>, --code-stdin or CLAWGATE_SETUP_CODE)',
    );
  for (const u of urls) {
    if (!isGatewayUrl(u)) throw new UsageError(`gateway URL must start with ws:// or wss://, got ${u}`);
  }
  const pinText = values['tls-fingerprint'] as string | undefined;
  const pinFlag = pinText !== undefined ? normalizeFingerprint(pinText) : null;
  if (pinText !== undefined && !pinFlag) throw new UsageError(`--tls-fingerprint must be a SHA-256 fingerprint (64 hex digits), got ${pinText}`);
  const keyText = values['gateway-key'] as string | undefined;
  const gatewayKey = keyText !== undefined ? normalizeGatewayKeyFingerprint(keyText) : null;
  if (keyText !== undefined && !gatewayKey)
    throw new UsageError(
      `--gateway-key must be the SHA-256 fingerprint of the gateway key (64 hex digits, \`clawgate qr\` on the gateway host shows it), got ${keyText}`,
    );

  const target = normalizeGatewayUrl(urls[0] as string);
  const privateKeyPem = state.loadIdentityIfPresent()?.privateKeyPem as string;
  const nowMs = systemClock.now();
  const record = await store.update(
    target.key,
    (cur) => {
      const next: GatewayRecord = cur
        ? { ...cur, tokens: { ...cur.tokens } }
        : {
            version: 1,
            key: target.key,
            url: target.url,
            deviceId: identity.deviceId,
            identity: { alg: 'ed25519', privateKeyPem },
            tokens: {},
            createdAtMs: nowMs,
            ...(creds.tlsFingerprint ? { tlsFingerprint: creds.tlsFingerprint } : {}),
            ...(creds.gatewayKey ? { gatewayKey: creds.gatewayKey } : {}),
          };
      if (code) {
        next.bootstrap = { token: code.bootstrapToken, setAtMs: nowMs, ...(code.expiresAtMs ? { expiresAtMs: code.expiresAtMs } : {}) };
        if (code.tlsFingerprint) next.tlsFingerprint = code.tlsFingerprint;
        if (code.gatewayKey) next.gatewayKey = code.gatewayKey;
      }
      // The flags pin for this run and every later one: the record is what each reconnect checks.
      if (pinFlag) next.tlsFingerprint = pinFlag;
      if (gatewayKey) next.gatewayKey = gatewayKey;
      return next;
    },
    { label: 'node-run-prepare' },
  );
  if (record?.deviceId !== identity.deviceId) {
    err(
      `${state.dir} holds a credential record for ${target.url} of another device (${record?.deviceId}); move ${join(state.dir, 'client')} away to start over`,
    );
    return 1;
  }
  if (record.tlsFingerprint) {
    const plain = urls.find((u) => !/^wss:\/\//i.test(u));
    if (plain) throw new UsageError(`a TLS fingerprint is pinned but ${plain} is not a wss:// URL; refusing to connect without TLS`);
  }

  const host = new NodeHost({
    state,
    deviceId: identity.deviceId,
    instanceId,
    urls,
    sharedToken,
    password,
    displayName: (values.name as string | undefined) ?? hostname(),
    commands,
    execPolicy,
    allowlistPath: allowlist.path,
    store,
    platform: nodePlatform(),
    clock: systemClock,
    random: systemRandom,
    env: process.env,
    out,
    err,
  });
  const stop = () => host.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await host.run();
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

function isGatewayUrl(u: string): boolean {
  return /^wss?:\/\//i.test(u);
}

/** How many gateway records `clawgate pair` / the companion stored under `<dir>/client/` (0 when none). */
async function pairedRecords(dir: string): Promise<number> {
  const { FileCredentialStore } = await import('@clawgate/client');
  if (!existsSync(join(dir, 'client', 'gateways'))) return 0;
  return new FileCredentialStore(join(dir, 'client')).scan().records.length;
}

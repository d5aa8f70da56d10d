/**
 * Where and how a CLI command reaches a gateway: the URL, the credential (owner proof or shared
 * secret), the gateway key to insist on and the TLS pin (docs/architecture.md, "The CLI").
 */
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { audienceOf, normalizeGatewayKeyFingerprint } from '@clawgate/protocol/gateway-proof';
import { DEFAULTS } from '../core/config.js';
import { readGatewayKeyFingerprint } from '../server/gateway-key.js';
import { readSecretEnv, readSecretFlag } from './secret-input.js';
import { isOwnerCredential, readCredentials, readRuntimeInfo, resolveStateDir } from './state.js';
import { UsageError } from './usage.js';

export interface Target {
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

/** Where and how a CLI command reaches a gateway. */
export function resolveTarget(values: Record<string, unknown>): Target {
  const known = resolvedTargets.get(values);
  if (known) return known;
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  // gateway.json only says where to dial; the gateway key decides whether to talk.
  const runtime = readRuntimeInfo(stateDir);
  // An empty CLAWGATE_URL (`CLAWGATE_URL= clawgate …`) means unset, not a URL.
  const url = (values.url as string | undefined) ?? (process.env.CLAWGATE_URL || undefined) ?? runtime?.url ?? `ws://127.0.0.1:${DEFAULTS.port}`;
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
  // owner credential always needs a proven key (the session refuses to prove it to an unproven server).
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

/** A word as a POSIX shell reads it back unchanged: bare when safe, else single-quoted. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_/.:@%+=,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * `clawgate <words>` with the `--state-dir` and `--url` this command line was given, so a hint
 * printed after `pair --state-dir X` runs as printed (without them it would look in ~/.clawgate).
 */
export function commandHint(values: Record<string, unknown>, words: string, carry: ReadonlyArray<'state-dir' | 'url'> = ['state-dir', 'url']): string {
  const extra = carry.flatMap((flag) => (typeof values[flag] === 'string' ? [`--${flag}`, shellWord(values[flag] as string)] : []));
  return ['clawgate', words, ...extra].join(' ');
}

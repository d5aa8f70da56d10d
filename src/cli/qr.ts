/**
 * `clawgate qr`: mint a setup code on the running gateway (RPC device.pair.setupCode with the
 * owner credential, so the gateway knows the code), and print the code, its `oc-pair://` link
 * and a QR code of the link. `--list` and `--revoke <id>` manage the codes.
 */
import QRCode from 'qrcode-terminal/vendor/QRCode/index.js';
import QRErrorCorrectLevel from 'qrcode-terminal/vendor/QRCode/QRErrorCorrectLevel.js';
import { MAX_SETUP_TTL_MS, MIN_SETUP_TTL_MS, resolveSetupProfile, type SetupView } from '../core/setup-codes.js';
import { field, out, outRaw } from './common.js';
import { withGateway } from './gateway-session.js';
import { commandHint } from './target.js';
import { parse, UsageError } from './usage.js';

const USAGE = `usage: clawgate qr [--profile operator|node|operator+node] [--scopes <s>…] [--label <name>] [--ttl <10m>]
                   [--url <gateway-url>] [--public-url <url>] [--json]
       clawgate qr --list [--json]
       clawgate qr --revoke <setupId> [--json]`;

/** Modules of quiet zone around the symbol (the QR spec asks for 4). */
const QUIET = 4;

/** The module matrix of a QR code (error correction M) for `text`. */
export function qrMatrix(text: string): boolean[][] {
  const qr = new QRCode(-1, QRErrorCorrectLevel.M);
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  return Array.from({ length: n }, (_, r) => Array.from({ length: n }, (_, c) => qr.isDark(r, c)));
}

/**
 * Render a QR code for a terminal, two modules per character cell (half blocks), light modules
 * drawn lit. With `ansi` the colours are forced (white on black), so it scans on light and dark
 * themes alike; without it (output to a file or pipe) it suits the usual light-on-dark terminal.
 */
export function renderQr(text: string, opts: { ansi: boolean }): string {
  const m = qrMatrix(text);
  const size = m.length + 2 * QUIET;
  const dark = (r: number, c: number) => {
    const rr = r - QUIET;
    const cc = c - QUIET;
    return rr >= 0 && cc >= 0 && rr < m.length && cc < m.length && (m[rr]?.[cc] ?? false);
  };
  const lines: string[] = [];
  for (let r = 0; r < size; r += 2) {
    let line = '';
    for (let c = 0; c < size; c++) {
      const top = dark(r, c);
      const bottom = r + 1 < size ? dark(r + 1, c) : false;
      // The lit part of a cell is a light module: '█' both, '▀' top only, '▄' bottom only.
      line += top ? (bottom ? ' ' : '▄') : bottom ? '▀' : '█';
    }
    // With ANSI: bright white on black, so the lit parts are white whatever the terminal theme.
    lines.push(opts.ansi ? `\x1b[97;40m${line}\x1b[0m` : line);
  }
  return lines.join('\n');
}

/** `10m`, `90s`, `1h`, `1500ms`, `1d` → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`--ttl takes a duration with a unit, like 30s, 10m or 1h; got ${text}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

const when = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const inHuman = (ms: number) => {
  const s = Math.round(ms / 1000);
  if (Math.abs(s) < 120) return `${s}s`;
  if (Math.abs(s) < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
};

interface MintResult {
  setupId: string;
  setupCode: string;
  link: string;
  expiresAtMs: number;
  gatewayUrl: string;
  urlSource: string;
  tlsFingerprint?: string;
  gatewayKey?: string;
  auth: string;
  profile: string;
  roles: string[];
  scopes: string[];
  label: string | null;
}

function isPlaintextRemote(url: string): boolean {
  try {
    const u = new URL(url);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    return u.protocol === 'ws:' && !(host === 'localhost' || host === '::1' || host.startsWith('127.'));
  } catch {
    return false;
  }
}

function printList(codes: SetupView[]): void {
  out(`Setup codes (${codes.length})`);
  const now = Date.now();
  for (const c of codes) {
    const what = `${c.profile}${c.scopes.length ? `[${c.scopes.join(',')}]` : ''}`;
    let state: string = c.status;
    if (c.status === 'active') state = `active, expires in ${inHuman(c.expiresAtMs - now)}`;
    if (c.status === 'redeemed')
      state = `redeemed by ${c.deviceName ? `${field(c.deviceName)} ` : ''}${c.deviceId} as ${c.redeemedRole} at ${when(c.redeemedAtMs ?? 0)}`;
    if (c.status === 'expired') state = `expired ${when(c.expiresAtMs)}`;
    if (c.status === 'revoked') state = `revoked ${when(c.revokedAtMs ?? 0)}`;
    if (c.status === 'burned') state = `burned after ${c.failures} wrong guesses`;
    out(`  ${c.setupId}  ${c.label === undefined ? '-' : field(c.label)}  ${what}  minted ${when(c.createdAtMs)} by ${c.createdBy}  ${state}`);
  }
}

export async function qrCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    token: { type: 'string' },
    password: { type: 'string' },
    'gateway-key': { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
    profile: { type: 'string' },
    scopes: { type: 'string', multiple: true },
    scope: { type: 'string', multiple: true },
    label: { type: 'string' },
    ttl: { type: 'string' },
    'public-url': { type: 'string' },
    'tls-fingerprint': { type: 'string' },
    list: { type: 'boolean' },
    revoke: { type: 'string' },
  });
  const json = values.json === true;

  if (values.list) {
    if (values.revoke !== undefined || positionals.length > 0) throw new UsageError(USAGE);
    return withGateway(values, async (c) => {
      const res = await c.request<{ codes: SetupView[] }>('device.pair.setupStatus', {});
      if (json) out(JSON.stringify(res));
      else printList(res.codes);
      return 0;
    });
  }

  if (values.revoke !== undefined) {
    const setupId = values.revoke as string;
    if (!/^[0-9a-f]{16}$/.test(setupId) || positionals.length > 0)
      throw new UsageError(`--revoke takes a setup id (16 hex digits, see clawgate qr --list)\n${USAGE}`);
    return withGateway(values, async (c) => {
      const res = await c.request<{ setupId: string; revoked: boolean; setup: SetupView }>('device.pair.setupRevoke', { setupId });
      if (json) out(JSON.stringify(res));
      else if (res.revoked) out(`revoked setup code ${setupId}; it can no longer be redeemed (devices it already paired keep their access)`);
      else out(`setup code ${setupId} was already ${res.setup.status}; nothing changed`);
      return 0;
    });
  }

  // Scopes: repeated flags, commas, or words following --scopes.
  const asked = [...((values.scopes as string[] | undefined) ?? []), ...((values.scope as string[] | undefined) ?? [])];
  if (positionals.length > 0) {
    if (asked.length === 0) throw new UsageError(`unexpected argument: ${positionals[0]}\n${USAGE}`);
    asked.push(...positionals);
  }
  const scopes = asked
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  const profile = resolveSetupProfile(values.profile as string | undefined, scopes.length > 0 ? scopes : undefined);
  if ('problem' in profile) throw new UsageError(profile.problem);
  let ttlMs: number | undefined;
  if (values.ttl !== undefined) {
    ttlMs = parseDuration(values.ttl as string);
    if (ttlMs < MIN_SETUP_TTL_MS || ttlMs > MAX_SETUP_TTL_MS) throw new UsageError(`--ttl must be between 10s and 24h, got ${values.ttl}`);
  }
  const publicUrl = (values['public-url'] as string | undefined) ?? (values.url as string | undefined);
  const params = {
    profile: profile.name,
    ...(scopes.length > 0 ? { scopes: profile.scopes } : {}),
    ...(values.label !== undefined ? { label: values.label as string } : {}),
    ...(ttlMs !== undefined ? { ttlMs } : {}),
    ...(publicUrl !== undefined ? { publicUrl } : {}),
  };
  return withGateway(values, async (c) => {
    const r = await c.request<MintResult>('device.pair.setupCode', params);
    if (json) {
      out(
        JSON.stringify({
          setupId: r.setupId,
          setupCode: r.setupCode,
          link: r.link,
          expiresAtMs: r.expiresAtMs,
          profile: r.profile,
          roles: r.roles,
          scopes: r.scopes,
          label: r.label,
          gatewayUrl: r.gatewayUrl,
          urlSource: r.urlSource,
          ...(r.tlsFingerprint ? { tlsFingerprint: r.tlsFingerprint } : {}),
          ...(r.gatewayKey ? { gatewayKey: r.gatewayKey } : {}),
        }),
      );
      return 0;
    }
    const access = r.roles.map((role) => (role === 'operator' ? `operator (${r.scopes.join(', ')})` : role)).join(' + ');
    out(`Setup code${r.label ? ` for ${field(r.label)}` : ''}: pairs one device as ${access}`);
    out(`Gateway:  ${r.gatewayUrl}`);
    if (r.tlsFingerprint) out(`TLS pin:  SHA-256 ${r.tlsFingerprint} (the device accepts only this certificate)`);
    if (r.gatewayKey) out(`Key:      SHA-256 ${r.gatewayKey} (gateway identity: the device sends nothing to a server that cannot prove it)`);
    out(`Expires:  ${when(r.expiresAtMs)} (in ${inHuman(r.expiresAtMs - Date.now())})`);
    out(`Setup id: ${r.setupId}  (${commandHint(values, 'qr --list')} shows who redeemed it; ${commandHint(values, `qr --revoke ${r.setupId}`)} cancels it)`);
    if (isPlaintextRemote(r.gatewayUrl)) {
      out('Warning:  the code points at plaintext ws:// on a non-loopback host; anyone on that network path can read');
      out('          the device token the redemption returns. Prefer a wss:// URL (--public-url wss://…).');
    }
    out('');
    outRaw(renderQr(r.link, { ansi: process.stdout.isTTY === true }));
    out('');
    out(`Code:  ${r.setupCode}`);
    out(`Link:  ${r.link}`);
    // The code is a bootstrap secret: the suggested command keeps it off the device's command line.
    out(
      r.roles.includes('node') && !r.roles.includes('operator')
        ? 'On the node: save the code in a file only you can read (chmod 600), then clawgate node run --code-file <file>'
        : 'On the device: save the code in a file only you can read (chmod 600), then clawgate pair --code-file <file> (or CLAWGATE_SETUP_CODE=<code>)',
    );
    return 0;
  });
}

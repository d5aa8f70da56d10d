/**
 * Deployment helpers: `clawgate doctor` (is this gateway configured sanely, and does the URL it
 * advertises reach it?) and `clawgate gateway install-service --print` (a systemd unit).
 */

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { WebSocket } from 'ws';
import { checkTlsPin } from '../client/connection.js';
import { type GatewayConfig, isLoopbackBind, resolveBindHost } from '../core/config.js';
import { isLoopbackAddress, proxyEntryWidthBits } from '../server/proxy.js';
import { certFacts } from '../server/tls.js';
import { SqliteStore } from '../store/sqlite/store.js';
import { out } from './common.js';
import { explainTransport } from './connect-errors.js';
import { GATEWAY_FLAGS, loadTls, type ResolvedGatewaySettings, resolveGatewaySettings } from './gateway-config.js';
import { readCredentials, readRuntimeInfo } from './state.js';
import { diskSpaceCheck, SQLITE_FILE, sqliteIntegrityCheck, sqliteLockCheck, stateDirCheck } from './state-health.js';
import { parse, UsageError } from './usage.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface Check {
  name: string;
  status: CheckStatus;
  message: string;
  details?: Record<string, unknown>;
}

/** A certificate this close to expiry earns a warning. */
const EXPIRY_WARN_MS = 21 * 86_400_000;
/** How long the reachability probe waits for `connect.challenge`. */
const PROBE_TIMEOUT_MS = 5_000;
/** An IPv4 entry covering more than a /16 (2^16 addresses) is suspiciously wide for a proxy list. */
const WIDE_V4_BITS = 16;
const WIDE_V6_BITS = 64;

/**
 * Open the URL as a client would and wait for the gateway's `connect.challenge` (a nonce and a
 * timestamp): proof that a clawgate-speaking gateway answers there, not just some web server.
 */
export function probeChallenge(
  url: string,
  opts: { tlsFingerprint?: string | undefined; timeoutMs?: number } = {},
): Promise<{ ok: true } | { ok: false; problem: string }> {
  return new Promise((done) => {
    const pin = opts.tlsFingerprint ? normalizeFingerprint(opts.tlsFingerprint) : null;
    let settled = false;
    let ws: WebSocket;
    const finish = (r: { ok: true } | { ok: false; problem: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      done(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, problem: `no connect.challenge within ${opts.timeoutMs ?? PROBE_TIMEOUT_MS} ms` }),
      opts.timeoutMs ?? PROBE_TIMEOUT_MS,
    );
    try {
      ws = new WebSocket(url, { perMessageDeflate: false, ...(pin ? { rejectUnauthorized: false } : {}) });
    } catch (err) {
      clearTimeout(timer);
      done({ ok: false, problem: (err as Error).message });
      return;
    }
    ws.on('error', (err) => {
      // A socket that reached nothing is said as what it means and what to do (connect-errors.ts).
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const explained = explainTransport(code, url, 'clawgate gateway run');
      const said = explained && !explained.message.includes(code) ? `${explained.message} (${code})` : explained?.message;
      finish({ ok: false, problem: explained ? `${said}; ${explained.nextStep}` : err.message });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => finish({ ok: false, problem: `HTTP ${res.statusCode}${body ? `: ${body.slice(0, 300)}` : ''}` }));
      res.on('error', () => finish({ ok: false, problem: `HTTP ${res.statusCode}` }));
    });
    if (pin) {
      ws.on('upgrade', (res) => {
        const mismatch = checkTlsPin(res, pin, url);
        if (mismatch) finish({ ok: false, problem: `certificate fingerprint ${mismatch.actual ?? '(none)'} is not the expected ${pin}` });
      });
    }
    ws.on('message', (data) => {
      try {
        const f = JSON.parse(data.toString()) as { type?: string; event?: string; payload?: { nonce?: unknown; ts?: unknown } };
        if (f.type === 'event' && f.event === 'connect.challenge' && typeof f.payload?.nonce === 'string' && typeof f.payload.ts === 'number')
          finish({ ok: true });
        else finish({ ok: false, problem: 'the first frame was not a connect.challenge' });
      } catch {
        finish({ ok: false, problem: 'the server sent something that is not a gateway frame' });
      }
    });
    ws.on('close', (code) => finish({ ok: false, problem: `closed with ${code} before the challenge` }));
  });
}

/**
 * Approval policies (already validated when the config was read): which rules decide, and
 * whether the SSH proof can work at all — a missing known_hosts or key file would make every
 * probe fail, leaving each request to a person without anyone noticing why.
 */
function approvalChecks(base: GatewayConfig): Check[] {
  const a = base.approvals;
  if (!a || a.policies.length === 0) return [];
  const rules = a.policies.map((p) => `${p.name} (${p.action}${p.match.proof ? ` by ${p.match.proof}` : ''}${p.ttl ? ` for ${p.ttl}` : ''})`);
  const checks: Check[] = [{ name: 'approvals', status: 'ok', message: `${a.policies.length} rule(s), first match decides: ${rules.join(', ')}` }];
  if (a.ssh) {
    const missing = [a.ssh.knownHostsFile, a.ssh.identityFile].filter((f): f is string => f !== undefined && !existsSync(f));
    checks.push(
      missing.length > 0
        ? {
            name: 'approvals-ssh',
            status: 'fail',
            message: `${missing.join(' and ')} not found: every SSH proof would fail (requests would wait for a person)`,
          }
        : { name: 'approvals-ssh', status: 'ok', message: `probes run as ${a.ssh.user}, host keys from ${a.ssh.knownHostsFile}` },
    );
  }
  return checks;
}

function configChecks(s: ResolvedGatewaySettings): Check[] {
  const checks: Check[] = [];
  const { base } = s;
  const src = s.configPath ? ` (${s.configPath})` : '';
  if (!isLoopbackBind(base.bind) && !s.chosenToken && !s.password) {
    checks.push({
      name: 'config',
      status: 'fail',
      message: `bind ${base.bind} is not loopback but no token or password is configured${src}: the gateway refuses to start like this`,
    });
  } else checks.push({ name: 'config', status: 'ok', message: `bind ${base.bind} (${resolveBindHost(base.bind)}), port ${base.port}${src}` });
  if (base.sharedSecretIsAdminOnHost) {
    checks.push({
      name: 'shared-secret',
      status: 'warn',
      message:
        'gateway.auth.sharedSecretIsAdminOnHost is on: any local process holding the gateway token or password (which is handed to devices and node hosts) gets admin and pairing on this host without the owner approving it. Turn it off unless every holder of that secret is the owner.',
    });
  }
  if (base.publicUrl) {
    const u = new URL(base.publicUrl);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (u.protocol === 'ws:' && !(host === 'localhost' || isLoopbackAddress(host))) {
      checks.push({
        name: 'public-url',
        status: 'warn',
        message: `${base.publicUrl} is plaintext ws:// to another host: device tokens handed out by pairing cross the network readable. Put TLS in front (wss://).`,
      });
    } else checks.push({ name: 'public-url', status: 'ok', message: `advertised as ${base.publicUrl}` });
    if (base.contextPath && !u.pathname.startsWith(base.contextPath)) {
      checks.push({
        name: 'public-url',
        status: 'warn',
        message: `the gateway answers under ${base.contextPath} but the public URL path is ${u.pathname || '/'}: fine only if the proxy rewrites the path`,
      });
    }
  }
  return checks;
}

function trustedProxyChecks(s: ResolvedGatewaySettings): Check[] {
  const list = s.base.trustedProxies;
  const checks: Check[] = [];
  if (list.length === 0) {
    const behindProxy = s.base.publicUrl !== undefined && s.tls.kind === 'none';
    checks.push({
      name: 'trusted-proxies',
      status: behindProxy ? 'warn' : 'ok',
      message: behindProxy
        ? 'no trustedProxies, but a public URL is set: if a reverse proxy forwards to this gateway, its clients are refused with HTTP 403 proxy_attribution_required until its address is listed'
        : 'none (forwarded headers are refused)',
    });
    return checks;
  }
  const wide = list.filter((e) => proxyEntryWidthBits(e) > (e.includes(':') ? WIDE_V6_BITS : WIDE_V4_BITS));
  if (wide.length > 0) {
    checks.push({
      name: 'trusted-proxies',
      status: 'warn',
      message: `${wide.join(', ')} trusts a very wide range: anyone there can claim any client address. List your proxies' exact addresses.`,
    });
  }
  const loop = list.filter((e) => {
    const [addr = ''] = e.split('/');
    return isLoopbackAddress(addr) || e === '::/0' || e === '0.0.0.0/0' || e.startsWith('127.');
  });
  if (loop.length > 0) {
    checks.push({
      name: 'trusted-proxies',
      status: 'warn',
      message:
        `${loop.join(', ')} covers loopback: a same-host proxy that fails to send X-Forwarded-For makes every client look local. ` +
        'Prefer a dedicated proxy source address (nginx: proxy_bind 127.0.0.2;) and trust only that.',
    });
  }
  if (checks.length === 0) checks.push({ name: 'trusted-proxies', status: 'ok', message: list.join(', ') });
  return checks;
}

function tlsChecks(s: ResolvedGatewaySettings, nowMs: number): { checks: Check[]; fingerprint?: string } {
  if (s.tls.kind === 'none')
    return { checks: [{ name: 'tls', status: 'ok', message: 'native TLS off (plain ws://; terminate TLS in a proxy for remote clients)' }] };
  let loaded: ReturnType<typeof loadTls>;
  try {
    loaded = loadTls(s.tls, s.stateDir, { generate: false });
  } catch (err) {
    const missingSelfSigned = s.tls.kind === 'self-signed';
    return {
      checks: [
        {
          name: 'tls',
          status: missingSelfSigned ? 'warn' : 'fail',
          message: missingSelfSigned ? 'the self-signed certificate is generated on first start; not there yet' : (err as Error).message,
        },
      ],
    };
  }
  const m = loaded.material as NonNullable<typeof loaded.material>;
  const checks: Check[] = [];
  let facts: ReturnType<typeof certFacts>;
  try {
    facts = certFacts(m.certPem);
    if (!new X509Certificate(m.certPem).checkPrivateKey(createPrivateKey(m.keyPem))) {
      checks.push({ name: 'tls', status: 'fail', message: `the key ${loaded.keyPath} does not belong to the certificate ${m.certPath}` });
    }
  } catch (err) {
    return { checks: [{ name: 'tls', status: 'fail', message: `cannot parse the TLS certificate or key: ${(err as Error).message}` }] };
  }
  const leftMs = facts.notAfterMs - nowMs;
  const days = Math.floor(leftMs / 86_400_000);
  const details = {
    certPath: m.certPath,
    fingerprint: facts.fingerprint,
    notAfter: new Date(facts.notAfterMs).toISOString(),
    selfSigned: m.selfSigned === true,
  };
  if (leftMs <= 0) checks.push({ name: 'tls-expiry', status: 'fail', message: `the certificate expired ${new Date(facts.notAfterMs).toISOString()}`, details });
  else if (facts.notBeforeMs > nowMs)
    checks.push({ name: 'tls-expiry', status: 'fail', message: `the certificate is not valid before ${new Date(facts.notBeforeMs).toISOString()}`, details });
  else if (leftMs < EXPIRY_WARN_MS) checks.push({ name: 'tls-expiry', status: 'warn', message: `the certificate expires in ${days} days; renew it`, details });
  else checks.push({ name: 'tls-expiry', status: 'ok', message: `valid for ${days} more days; SHA-256 ${facts.fingerprint}`, details });
  return { checks, fingerprint: facts.fingerprint };
}

async function storeCheck(stateDir: string): Promise<Check> {
  const path = join(stateDir, 'clawgate.sqlite');
  if (!existsSync(path)) return { name: 'store', status: 'warn', message: `no database at ${path} yet (created on first start)` };
  let store: SqliteStore | null = null;
  try {
    store = new SqliteStore(path);
    const id = await store.getMeta('gateway.id');
    return { name: 'store', status: 'ok', message: `${path} opens${id ? ` (gateway ${id})` : ''}` };
  } catch (err) {
    return { name: 'store', status: 'fail', message: `cannot open ${path}: ${(err as Error).message}` };
  } finally {
    await store?.close().catch(() => undefined);
  }
}

export async function doctorCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { ...GATEWAY_FLAGS, json: { type: 'boolean' }, 'tls-fingerprint': { type: 'string' }, timeout: { type: 'string' } });
  const json = values.json === true;
  const checks: Check[] = [];
  let settings: ResolvedGatewaySettings | null = null;
  try {
    settings = resolveGatewaySettings(values);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    checks.push({ name: 'config', status: 'fail', message: err.message });
  }
  const timeoutMs = values.timeout !== undefined ? Number(values.timeout) : PROBE_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout takes milliseconds, e.g. 5000');
  if (settings) {
    checks.push(...configChecks(settings), ...approvalChecks(settings.base));
    const creds = (() => {
      try {
        return readCredentials(settings.stateDir);
      } catch (err) {
        checks.push({ name: 'credentials', status: 'fail', message: (err as Error).message });
        return undefined;
      }
    })();
    if (creds === null) checks.push({ name: 'credentials', status: 'warn', message: `no credentials in ${settings.stateDir} yet (generated on first start)` });
    else if (creds) checks.push({ name: 'credentials', status: 'ok', message: `${join(settings.stateDir, 'credentials.json')}` });
    // The state dir and the database, one check per fault (docs/reliability.md §Database and disk faults).
    const sqliteFile = join(settings.stateDir, SQLITE_FILE);
    const health = [stateDirCheck(settings.stateDir), diskSpaceCheck(settings.stateDir), sqliteIntegrityCheck(sqliteFile), sqliteLockCheck(sqliteFile)];
    checks.push(...health);
    // Opening the store would wait on a held lock, or fail again on a corrupt file: said above already.
    if (!health.some((c) => c.status !== 'ok' && c.name.startsWith('store-'))) checks.push(await storeCheck(settings.stateDir));
    const runtime = readRuntimeInfo(settings.stateDir);
    if (settings.tls.kind === 'none' && runtime?.tlsFingerprint && existsSync(join(settings.stateDir, 'tls', 'cert.pem'))) {
      // Run without TLS flags against a gateway that serves its generated certificate: check that one.
      settings = { ...settings, tls: { kind: 'self-signed' } };
    }
    const tls = tlsChecks(settings, Date.now());
    if (runtime?.tlsFingerprint && tls.fingerprint && runtime.tlsFingerprint !== tls.fingerprint) {
      checks.push({
        name: 'tls',
        status: 'warn',
        message:
          'the running gateway serves another certificate than the configured one: restart it to pick up the new certificate (pinned clients will need a fresh setup code)',
      });
    }
    checks.push(...tls.checks);
    checks.push(...trustedProxyChecks(settings));

    const flagPin = values['tls-fingerprint'] as string | undefined;
    if (flagPin !== undefined && !normalizeFingerprint(flagPin)) throw new UsageError('--tls-fingerprint must be a SHA-256 fingerprint (64 hex digits)');
    if (runtime) {
      const r = await probeChallenge(runtime.url, { tlsFingerprint: runtime.tlsFingerprint, timeoutMs });
      checks.push(
        r.ok
          ? { name: 'listening', status: 'ok', message: `${runtime.url} answers with a connect.challenge (pid ${runtime.pid})` }
          : {
              name: 'listening',
              status: 'fail',
              message: `${runtime.url} (recorded by pid ${runtime.pid}) does not answer: ${r.problem}. Is the gateway running?`,
            },
      );
    } else
      checks.push({ name: 'listening', status: 'warn', message: `no running gateway recorded in ${settings.stateDir} (start it with clawgate gateway run)` });

    const advertised = settings.base.publicUrl ?? runtime?.url;
    if (advertised && (settings.base.publicUrl || !runtime)) {
      // The certificate a client meets at the public URL: ours when we serve TLS and nothing re-terminates it.
      const pin = flagPin ?? (advertised.startsWith('wss://') && settings.tls.kind !== 'none' ? tls.fingerprint : undefined);
      const r = await probeChallenge(advertised, { tlsFingerprint: pin, timeoutMs });
      checks.push(
        r.ok
          ? { name: 'advertised-url', status: 'ok', message: `${advertised} reaches a gateway (connect.challenge received)` }
          : {
              name: 'advertised-url',
              status: 'fail',
              message: `${advertised} does not reach the gateway: ${r.problem}. Setup codes and links point there, so new devices cannot pair.`,
            },
      );
    }
  }
  const ok = !checks.some((c) => c.status === 'fail');
  if (json) out(JSON.stringify({ ok, checks }));
  else {
    for (const c of checks) out(`${c.status === 'ok' ? 'ok  ' : c.status === 'warn' ? 'warn' : 'FAIL'}  ${c.name.padEnd(16)} ${c.message}`);
    out(ok ? 'doctor: no failures' : 'doctor: failures found');
  }
  return ok ? 0 : 1;
}

/** Quote one ExecStart argument for systemd (double quotes; backslash, quote, `$` and `%` escaped). */
export function systemdQuote(arg: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) && !arg.includes('%')) return arg;
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}

export function installServiceCommand(args: string[]): number {
  const { values } = parse(args, {
    ...GATEWAY_FLAGS,
    print: { type: 'boolean' },
    user: { type: 'string' },
    description: { type: 'string' },
  });
  if (values.print !== true) {
    throw new UsageError(
      'install-service only prints the unit (it never writes system files itself):\n' +
        '  clawgate gateway install-service --print [gateway run flags] | sudo tee /etc/systemd/system/clawgate.service\n' +
        '  sudo systemctl daemon-reload && sudo systemctl enable --now clawgate',
    );
  }
  if (values.token !== undefined || values.password !== undefined) {
    throw new UsageError(
      '--token/--password would be visible in the unit and in ps: pass --token-file/--password-file <path> (mode 0600), or put them in a config file (gateway.auth) and pass --config <file>',
    );
  }
  if (values['token-stdin'] === true || values['password-stdin'] === true) {
    throw new UsageError('a service has no standard input to read a secret from: pass --token-file/--password-file <path> (mode 0600)');
  }
  if (values['postgres-url'] !== undefined) {
    // POSTGRES: the URL usually carries a password.
    throw new UsageError('--postgres-url would be visible in the unit and in ps: put it in a config file (gateway.postgres.url) and pass --config <file>');
  }
  const s = resolveGatewaySettings(values);
  const stateDir = resolve(s.stateDir);
  const bin = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'clawgate.js');
  const argv = [process.execPath, bin, 'gateway', 'run', '--state-dir', stateDir];
  if (values.config) argv.push('--config', resolve(values.config as string));
  for (const flag of ['port', 'bind', 'public-url', 'context-path', 'tls-cert', 'tls-key', 'store', 'token-file', 'password-file'] as const) {
    const v = values[flag] as string | undefined;
    if (v !== undefined) argv.push(`--${flag}`, ['tls-cert', 'tls-key', 'token-file', 'password-file'].includes(flag) ? resolve(v) : v);
  }
  if (values.tls === true) argv.push('--tls');
  if (values.metrics === true) argv.push('--metrics');
  for (const p of (values['trusted-proxy'] as string[] | undefined) ?? []) argv.push('--trusted-proxy', p);
  const user = (values.user as string | undefined) ?? userInfo().username;
  const readWrite = [stateDir];
  const lines = [
    '# Generated by `clawgate gateway install-service --print`.',
    '# Install: … --print | sudo tee /etc/systemd/system/clawgate.service',
    '#          (the state dir must exist first: ProtectSystem=strict only lets the service write there)',
    '#          sudo systemctl daemon-reload && sudo systemctl enable --now clawgate',
    '[Unit]',
    `Description=${(values.description as string | undefined) ?? 'clawgate gateway (device pairing for OpenClaw clients)'}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `User=${user}`,
    `ExecStart=${argv.map(systemdQuote).join(' ')}`,
    // SIGTERM is the graceful stop (clients get close 1012 "service restart" and reconnect).
    'KillSignal=SIGTERM',
    'TimeoutStopSec=15',
    'Restart=on-failure',
    'RestartSec=2',
    'UMask=0077',
    'NoNewPrivileges=true',
    'PrivateTmp=true',
    'ProtectSystem=strict',
    'ProtectHome=read-only',
    `ReadWritePaths=${readWrite.map(systemdQuote).join(' ')}`,
    'ProtectKernelTunables=true',
    'ProtectKernelModules=true',
    'ProtectControlGroups=true',
    'RestrictSUIDSGID=true',
    'LockPersonality=true',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ];
  process.stdout.write(lines.join('\n'));
  return 0;
}

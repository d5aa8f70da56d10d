/**
 * `clawgate companion …` — the per-user companion: one device that is an operator and a node
 * (src/companion/). `run` is the long-running process; `status`, `pair`, `set-token`,
 * `reconnect`/`pause`/`resume` and `mcp` talk to it over its local control socket, and fall back
 * to the credential store when it is not running.
 *
 * State: the device record lives in the CLI's client store (`<state-dir>/client/`, shared with
 * `clawgate pair` / `clawgate call`); the companion's own files in `<state-dir>/companion/`
 * (control.sock, companion.json, exec-allowlist.json, status.json).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { homedir, hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { nodePlatform, normalizeGatewayUrl, parseSetupCode } from '@clawgate/client';
import { printableLines } from '@clawgate/protocol/text';
import { Companion } from '../companion/companion.js';
import { askControl, type ControlRequest, listenControl } from '../companion/control.js';
import { hasNodeHostState, migrateNodeHostState } from '../companion/migrate.js';
import { parseSshTarget, SshForward, type SshTarget } from '../companion/ssh.js';
import { systemClock } from '../core/env.js';
import { type ExecPolicyMode, ensureAllowlistFile } from '../node-host/exec-policy.js';
import { writeFileDurably } from '../platform/durable-file.js';
import { crashHook } from './client-store.js';
import { CONFIG_FILE, type CompanionPaths, companionPaths, companionStatus, offlineStatus, pickUrl, readConfig, STATUS_FILE } from './companion-state.js';
import { nodeCommandFlags } from './node-flags.js';
import { readSecret, readSetupCode, SETUP_CODE_FLAGS } from './secret-input.js';
import { resolveStateDir } from './state.js';
import { parse, UsageError } from './usage.js';

/** The variable the companion's gateway token may come from (never CLAWGATE_TOKEN: that is an operator CLI's). */
const TOKEN_ENV = 'CLAWGATE_COMPANION_TOKEN';

const out = (line: string) => process.stdout.write(`${printableLines(line)}\n`);
const err = (line: string) => process.stderr.write(`${printableLines(line)}\n`);

export async function companionCommand(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'run':
      return run(args);
    case 'status':
      return statusCommand(args);
    case 'pair':
      return pairCommand(args);
    case 'set-token':
      return setTokenCommand(args);
    case 'reconnect':
    case 'pause':
    case 'resume':
      return sideCommand(sub, args);
    case 'mcp':
      return (await import('./companion-mcp.js')).mcpCommand(args);
    case 'install-service':
      return installServiceCommand(args);
    default:
      throw new UsageError('usage: clawgate companion run|status|pair|set-token|reconnect|pause|resume|mcp|install-service (see clawgate companion --help)');
  }
}

/** A port on 127.0.0.1 nobody listens on right now (the OS picks it). */
function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
    'token-stdin': { type: 'boolean' },
    pair: { type: 'string' },
    ...SETUP_CODE_FLAGS,
    'no-node': { type: 'boolean' },
    'no-operator': { type: 'boolean' },
    name: { type: 'string' },
    commands: { type: 'string' },
    'exec-policy': { type: 'string' },
    'state-dir': { type: 'string' },
    ssh: { type: 'string' },
    'ssh-identity': { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  let ssh: RunSettings['ssh'];
  if (values.ssh !== undefined) {
    const t = parseSshTarget(values.ssh as string);
    if ('problem' in t) throw new UsageError(`--ssh: ${t.problem}`);
    ssh = { text: values.ssh as string, target: t, ...(values['ssh-identity'] ? { identityFile: resolve(values['ssh-identity'] as string) } : {}) };
  } else if (values['ssh-identity'] !== undefined) throw new UsageError('--ssh-identity needs --ssh');
  const sides = { operator: values['no-operator'] !== true, node: values['no-node'] !== true };
  if (!sides.operator && !sides.node) throw new UsageError('--no-node and --no-operator together leave nothing to run');
  const { execPolicy, commands } = nodeCommandFlags(values, 'the companion');
  // Secrets: the code from a file, stdin or the environment (--pair on argv warns); the token never from argv silently.
  const code = readPairSource(values);
  const token = readSecret(values, 'token', [TOKEN_ENV])?.value;
  return runCompanion({
    stateDir: values['state-dir'] as string | undefined,
    sides,
    commands,
    execPolicy,
    code,
    token,
    url: values.url as string | undefined,
    name: values.name as string | undefined,
    ...(ssh ? { ssh } : {}),
  });
}

/**
 * `--pair <source>` names where the setup code is, never the code itself: `-` (standard input),
 * `env` (CLAWGATE_SETUP_CODE) or a file only its owner may read. A code or link given there is
 * refused — a command line is readable by every local user. Without `--pair`: `--code-file`,
 * `--code-stdin` or CLAWGATE_SETUP_CODE.
 */
function readPairSource(values: Record<string, unknown>): string | undefined {
  const source = values.pair as string | undefined;
  if (source === undefined) return readSetupCode(values, undefined, '')?.value;
  if (values['code-file'] !== undefined || values['code-stdin'] === true) throw new UsageError('--pair and --code-file/--code-stdin exclude each other');
  if (/^oc-pair:\/\//i.test(source) || (source.length > 40 && /^[A-Za-z0-9_-]+$/.test(source) && !existsSync(source)))
    throw new UsageError(
      '--pair takes where the setup code is (a 0600 file, `-` for standard input, or `env` for CLAWGATE_SETUP_CODE), never the code itself: a command line is readable by every local user',
    );
  if (source === '-') return readSetupCode({ 'code-stdin': true }, undefined, '')?.value;
  if (source === 'env') {
    const v = readSetupCode({}, undefined, '')?.value;
    if (v === undefined) throw new UsageError('--pair env: CLAWGATE_SETUP_CODE is not set');
    return v;
  }
  return readSetupCode({ 'code-file': source }, undefined, '')?.value;
}

export interface RunSettings {
  stateDir: string | undefined;
  sides: { operator: boolean; node: boolean };
  commands: string[];
  execPolicy: ExecPolicyMode;
  code: string | undefined;
  token: string | undefined;
  url: string | undefined;
  name: string | undefined;
  /** Where exec-allowlist.json lives (default: the companion dir; `node run` keeps its own). */
  allowlistDir?: string;
  /** Reach the gateway through a supervised `ssh -L` forward. */
  ssh?: { text: string; target: SshTarget; identityFile?: string };
}

/** `companion run` once its flags are read (also what `clawgate node run` runs on a paired state dir). */
export async function runCompanion(settings: RunSettings): Promise<number> {
  const { sides, commands, execPolicy, code, token } = settings;
  const values = { url: settings.url, name: settings.name };
  const paths = companionPaths(settings.stateDir);

  // Signals are taken from the start: a stop while waiting for an SSH forward is a clean exit too.
  let stopped = false;
  let stopNow: () => void = () => {};
  const stopRequested = new Promise<void>((resolveStop) => {
    stopNow = () => {
      stopped = true;
      resolveStop();
    };
  });
  process.once('SIGINT', stopNow);
  process.once('SIGTERM', stopNow);
  let companion: Companion | null = null;
  let forward: SshForward | null = null;
  let sshConfig: { target: string; remoteUrl: string; localPort: number } | null = null;
  const listening = await listenControl(paths.dir, async (req) => {
    const res = await handle(companion, paths, req);
    // The forward is part of the status when there is one.
    return req.op === 'status' && forward ? { ...(res as object), ssh: { target: settings.ssh?.text, ...forward.status } } : res;
  });
  if (!listening.ok) {
    err(`another clawgate companion run${listening.pid ? ` (pid ${listening.pid})` : ''} is using ${paths.dir}; stop it, or pass a different --state-dir`);
    return 1;
  }
  try {
    const platform = nodePlatform();
    const nowMs = systemClock.now();
    let url = values.url as string | undefined;
    let forceBootstrap = false;
    if (hasNodeHostState(paths.stateDir)) {
      // A node host's state dir: its identity and every token it holds become this device's.
      const m = await migrateNodeHostState(paths.stateDir, paths.store, nowMs);
      if (m.migrated) {
        out(
          `read the node host state in ${paths.stateDir} (device ${m.deviceId}; tokens: ${m.roles.join(', ') || 'none'}) into ${join(paths.stateDir, 'client')}; the old files are left as they were`,
        );
        if (code === undefined) url ??= m.url;
      }
    }
    let payload: ReturnType<typeof parseSetupCode> | null = null;
    if (code !== undefined) {
      try {
        payload = parseSetupCode(code, nowMs);
      } catch (e) {
        err(`setup code: ${(e as Error).message}`);
        return 1;
      }
      url ??= payload.url;
    } else {
      url = (await pickUrl(paths, url)) ?? undefined;
    }
    if (settings.ssh && url) {
      // The URL (from the code or --url) names the gateway as the SSH host sees it; this device connects to the forward.
      const remote = new URL(normalizeGatewayUrl(url).url);
      const previous = readConfig(paths.dir).ssh;
      const localPort =
        previous && previous.target === settings.ssh.text && previous.remoteUrl === remote.toString() ? previous.localPort : await freeLocalPort();
      forward = new SshForward({
        target: settings.ssh.target,
        localPort,
        remoteHost: remote.hostname.replace(/^\[|\]$/g, ''),
        remotePort: Number(remote.port || (remote.protocol === 'wss:' ? 443 : 80)),
        knownHostsFile: join(paths.dir, 'known_hosts'),
        // Whatever answered on the forward's port while ssh was down proved nothing; the real gateway may now.
        onUp: () => companion?.reconnectPausedBy(['gateway-key-mismatch']),
        ...(settings.ssh.identityFile ? { identityFile: settings.ssh.identityFile } : {}),
        out,
      });
      sshConfig = { target: settings.ssh.text, remoteUrl: remote.toString(), localPort };
      out(`ssh: opening a forward to ${remote.host} through ${settings.ssh.text} (host key checked against ${join(paths.dir, 'known_hosts')})`);
      forward.start();
      await Promise.race([forward.waitUp(), stopRequested]);
      if (stopped) return 0;
      url = `${remote.protocol}//127.0.0.1:${localPort}${remote.pathname === '/' ? '' : remote.pathname}${remote.search}`;
    }
    if (code !== undefined && payload && url) {
      const rec = await paths.store.load(normalizeGatewayUrl(url).key);
      const allHeld = (['operator', 'node'] as const).every((r) => !sides[r] || !!rec?.tokens[r]);
      if (rec?.bootstrap?.token === payload.bootstrapToken) {
        out('continuing the hand-off of this setup code (stored earlier)');
      } else if (rec && allHeld) {
        // Restarting with the same code (a service unit's environment) must not burn a spent code.
        out(
          `already paired (${(['operator', 'node'] as const).filter((r) => sides[r]).join(' + ')} tokens stored); ignoring the setup code — use \`clawgate companion pair\` to apply a new one`,
        );
      } else {
        const { applySetupCode } = await import('@clawgate/client');
        const crash = crashHook();
        const { record } = await applySetupCode(paths.store, platform, code, {
          url,
          nowMs,
          displayName: (values.name as string | undefined) ?? hostname(),
          ...(crash ? { checkpoint: crash } : {}),
        });
        out(`setup code stored for ${record.url} (device ${record.deviceId})`);
        forceBootstrap = true;
      }
    }
    if (!url)
      throw new UsageError(
        'no gateway to connect to: pass a setup code (--code-file <path>, --code-stdin or CLAWGATE_SETUP_CODE; `clawgate qr --profile operator+node` on the gateway host) or --url <ws-url> with --token-file <path>',
      );
    const target = normalizeGatewayUrl(url);
    if (token !== undefined) {
      const rec = await paths.store.load(target.key);
      if (rec?.sharedToken !== token) {
        const { setSharedToken } = await import('@clawgate/client');
        const hasTokens = !!rec && Object.keys(rec.tokens).length > 0;
        try {
          // Replacing a token next to working device tokens is checked first; a refused one changes nothing.
          await setSharedToken(paths.store, platform, target.url, token, { validate: hasTokens || !!rec?.sharedToken, nowMs });
          out(`gateway token stored for ${target.url}${hasTokens ? ' (checked first; device tokens kept)' : ''}`);
        } catch (e) {
          err(`the gateway refused the token: ${(e as Error).message}`);
          if (!hasTokens) return 1;
          out('continuing with the stored device tokens');
        }
      }
    }
    writeFileDurably(join(paths.dir, CONFIG_FILE), `${JSON.stringify({ version: 1, url: target.url, ...(sshConfig ? { ssh: sshConfig } : {}) }, null, 2)}\n`);
    const allowlistDir = settings.allowlistDir ?? paths.dir;
    const allowlist = ensureAllowlistFile(allowlistDir);
    if (sides.node && allowlist.created) out(`created ${allowlist.path} with a default exec allowlist; edit it to allow more commands`);

    let statusTimer: ReturnType<typeof setTimeout> | null = null;
    const writeStatus = () => {
      statusTimer = null;
      void companion
        ?.status()
        .then((s) => writeFileDurably(join(paths.dir, STATUS_FILE), `${JSON.stringify({ ...s, writtenAtMs: systemClock.now() }, null, 2)}\n`))
        .catch(() => undefined);
    };
    const checkpoint = crashHook();
    companion = new Companion({
      store: paths.store,
      platform,
      url: target.url,
      sides,
      forceBootstrap,
      displayName: (values.name as string | undefined) ?? hostname(),
      node: { commands, execPolicy, allowlistDir },
      clock: systemClock,
      env: process.env,
      out,
      err,
      onChange: () => {
        statusTimer ??= setTimeout(writeStatus, 100);
      },
      ...(checkpoint ? { checkpoint } : {}),
    });
    out(
      `companion for ${target.url}: ${[sides.operator && 'operator', sides.node && `node (${commands.join(', ') || 'no commands'}; exec policy ${execPolicy})`].filter(Boolean).join(' + ')}; control socket ${listening.path}`,
    );
    await companion.start();
    await stopRequested;
    if (statusTimer) clearTimeout(statusTimer);
    companion.close();
    forward?.stop();
    await companion
      .status()
      .then((s) => writeFileDurably(join(paths.dir, STATUS_FILE), `${JSON.stringify({ ...s, running: false, writtenAtMs: systemClock.now() }, null, 2)}\n`))
      .catch(() => undefined);
    return 0;
  } finally {
    process.off('SIGINT', stopNow);
    process.off('SIGTERM', stopNow);
    forward?.stop();
    listening.server.close();
  }
}

async function handle(companion: Companion | null, paths: CompanionPaths, req: ControlRequest): Promise<unknown> {
  if (req.op === 'status') return companion ? companion.status() : { ...(await offlineStatus(paths)), running: true, pid: process.pid };
  if (!companion) return { ok: false, code: 'COMPANION_STARTING', message: 'the companion is still starting; try again in a moment' };
  switch (req.op) {
    case 'apply-setup-code':
      return companion.applySetupCode(req.code);
    case 'set-shared-token':
      return companion.setSharedToken(req.token);
    case 'reconnect':
    case 'pause':
    case 'resume':
      return companion.control(req.op, req.side);
  }
}

async function statusCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' }, 'state-dir': { type: 'string' } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const paths = companionPaths(values['state-dir'] as string | undefined);
  const s = await companionStatus(paths);
  if (values.json) {
    out(JSON.stringify(s, null, 2));
    return 0;
  }
  out(`companion: ${s.running ? `running (pid ${s.pid})` : 'not running'}`);
  out(`gateway: ${s.url || '(none)'}   device: ${s.deviceId ?? '(none)'}`);
  if (s.ssh)
    out(
      `ssh: forward through ${s.ssh.target ?? '?'} ${s.ssh.state}${s.ssh.lastError ? ` (last: ${s.ssh.lastError})` : ''}${s.ssh.restarts ? `; restarted ${s.ssh.restarts} time(s)` : ''}`,
    );
  const c = s.credentials;
  const tokens = (['operator', 'node'] as const).map((r) => (c.tokens[r] ? `${r} token [${c.tokens[r]?.scopes.join(', ') || 'no scopes'}]` : `no ${r} token`));
  out(
    `credentials: ${tokens.join('; ')}; gateway token: ${c.sharedToken ? 'stored' : 'none'}${c.bootstrapPending ? '; setup code not yet fully handed off' : ''}`,
  );
  for (const side of [s.operator, s.node]) {
    out(
      `${side.side}: ${side.enabled ? side.state : 'off'}${side.credential ? ` (${side.credential})` : ''}${side.scopes.length ? `; scopes: ${side.scopes.join(', ')}` : ''}`,
    );
    if (side.pendingRequestId)
      out(`  pending request: ${side.pendingRequestId}${side.confirmationCode ? `  confirmation code: ${side.confirmationCode}` : ''}`);
    if (side.surface && side.surface !== 'unknown') out(`  commands: ${side.surface}${side.surfaceRequestId ? ` (request ${side.surfaceRequestId})` : ''}`);
    if (side.message) out(`  ${side.message}`);
    if (side.lastError) out(`  last error: ${side.lastError.message} [${side.lastError.code}]`);
    if (side.nextStep) out(`  next: ${side.nextStep}`);
  }
  return 0;
}

function printResult(res: unknown): number {
  const r = res as { ok?: boolean; message?: string; code?: string; nextStep?: string };
  if (r.ok) {
    out(r.message ?? 'done');
    return 0;
  }
  err(`error: ${r.message ?? 'failed'}${r.code ? ` [${r.code}]` : ''}${r.nextStep ? `\nnext: ${r.nextStep}` : ''}`);
  return 1;
}

async function pairCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...SETUP_CODE_FLAGS, 'state-dir': { type: 'string' }, url: { type: 'string' } });
  const code = readSetupCode(values, positionals[0], 'clawgate companion pair <setup-code>')?.value;
  if (code === undefined) throw new UsageError('pass the setup code with --code-file <path>, --code-stdin or CLAWGATE_SETUP_CODE');
  const paths = companionPaths(values['state-dir'] as string | undefined);
  const res = await askControl(paths.dir, { op: 'apply-setup-code', code });
  if (res !== null) return printResult(res);
  // Not running: store the code; the next `companion run` redeems it.
  const { applySetupCode } = await import('@clawgate/client');
  const { record } = await applySetupCode(paths.store, nodePlatform(), code, { ...(values.url ? { url: values.url as string } : {}), displayName: hostname() });
  writeFileDurably(join(paths.dir, CONFIG_FILE), `${JSON.stringify({ version: 1, url: record.url }, null, 2)}\n`);
  out(`setup code stored for ${record.url} (device ${record.deviceId}); the companion is not running: \`clawgate companion run\` redeems it`);
  return 0;
}

async function setTokenCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    token: { type: 'string' },
    'token-file': { type: 'string' },
    'token-stdin': { type: 'boolean' },
    'state-dir': { type: 'string' },
    url: { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const token = readSecret(values, 'token', [TOKEN_ENV])?.value;
  if (token === undefined) throw new UsageError(`pass the gateway token with --token-file <path>, --token-stdin or ${TOKEN_ENV}`);
  const paths = companionPaths(values['state-dir'] as string | undefined);
  const res = await askControl(paths.dir, { op: 'set-shared-token', token });
  if (res !== null) return printResult(res);
  const url = await pickUrl(paths, values.url as string | undefined);
  if (!url) throw new UsageError('no gateway known yet: pass --url <ws-url>');
  const { setSharedToken } = await import('@clawgate/client');
  try {
    await setSharedToken(paths.store, nodePlatform(), url, token, {});
  } catch (e) {
    err(`error: the gateway refused the token, nothing was changed: ${(e as Error).message}`);
    return 1;
  }
  out(`gateway token accepted by ${url} and stored; device tokens kept`);
  return 0;
}

async function sideCommand(op: 'reconnect' | 'pause' | 'resume', args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { 'state-dir': { type: 'string' } });
  const side = positionals[0];
  if (side !== 'operator' && side !== 'node') throw new UsageError(`usage: clawgate companion ${op} operator|node`);
  const paths = companionPaths(values['state-dir'] as string | undefined);
  const res = await askControl(paths.dir, { op, side });
  if (res === null) {
    err('error: the companion is not running; start it with `clawgate companion run`');
    return 1;
  }
  return printResult(res);
}

async function installServiceCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { print: { type: 'boolean' }, launchd: { type: 'boolean' }, 'state-dir': { type: 'string' } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const stateDir = resolve(resolveStateDir(values['state-dir'] as string | undefined));
  const bin = resolve(dirname(process.argv[1] ?? ''), 'clawgate.js');
  const argv = [process.execPath, existsSync(bin) ? bin : (process.argv[1] ?? 'clawgate'), 'companion', 'run', '--state-dir', stateDir];
  const text = values.launchd ? launchdPlist(argv, stateDir) : systemdUnit(argv, stateDir);
  if (values.print) {
    process.stdout.write(text);
    return 0;
  }
  const path = values.launchd
    ? join(homedir(), 'Library', 'LaunchAgents', 'dev.clawgate.companion.plist')
    : join(homedir(), '.config', 'systemd', 'user', 'clawgate-companion.service');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text, { mode: 0o644 });
  out(`wrote ${path}`);
  out(
    values.launchd
      ? `next: launchctl load -w ${path}`
      : 'next: systemctl --user daemon-reload && systemctl --user enable --now clawgate-companion (pair first: `clawgate companion pair --code-file <file>`)',
  );
  return 0;
}

/** systemd quotes arguments with double quotes; a path with spaces or quotes stays one argument. */
function systemdQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function systemdUnit(argv: string[], stateDir: string): string {
  return `# clawgate companion (systemd user unit): systemctl --user enable --now clawgate-companion
# Pair once first (clawgate companion pair --code-file <file>); no secret belongs in this file.
[Unit]
Description=clawgate companion (operator + node)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${argv.map(systemdQuote).join(' ')}
Restart=on-failure
RestartSec=5
# A gateway token, if you use one instead of a setup code: CLAWGATE_COMPANION_TOKEN=… in a 0600 file.
EnvironmentFile=-%h/.config/clawgate/companion.env
NoNewPrivileges=yes
UMask=0077
Environment=CLAWGATE_STATE_DIR=${systemdQuote(stateDir)}

[Install]
WantedBy=default.target
`;
}

export function launchdPlist(argv: string[], stateDir: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>dev.clawgate.companion</string>
  <key>ProgramArguments</key>
  <array>
${argv.map((a) => `    <string>${xmlEscape(a)}</string>`).join('\n')}
  </array>
  <key>EnvironmentVariables</key>
  <dict><key>CLAWGATE_STATE_DIR</key><string>${xmlEscape(stateDir)}</string></dict>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>ThrottleInterval</key><integer>5</integer>
  <key>Umask</key><integer>63</integer>
  <key>StandardOutPath</key><string>${xmlEscape(join(stateDir, 'companion', 'companion.log'))}</string>
  <key>StandardErrorPath</key><string>${xmlEscape(join(stateDir, 'companion', 'companion.log'))}</string>
</dict>
</plist>
`;
}

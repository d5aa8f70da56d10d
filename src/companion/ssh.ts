/**
 * `--ssh user@host[:port]`: reach a gateway that listens only on its own host through a local
 * forward opened — and kept open — with the system `ssh`. Non-interactive (BatchMode) and
 * strict about the host key, checked against `known_hosts` in the companion dir only: a host
 * whose key is not there is refused, never learned. The forward listens on 127.0.0.1 only; the
 * gateway key pin (checked on every connect before any credential leaves) covers a local
 * process squatting on the forward's port.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export interface SshTarget {
  user: string;
  host: string;
  port: number;
}

const USER_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?|\[[0-9A-Fa-f:.]+\])$/;

/** `user@host[:port]` (IPv6 in brackets), checked so that nothing in it can be read as an ssh option. */
export function parseSshTarget(text: string): SshTarget | { problem: string } {
  const at = text.indexOf('@');
  if (at <= 0) return { problem: 'expected user@host[:port]' };
  const user = text.slice(0, at);
  let rest = text.slice(at + 1);
  let port = 22;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    const after = close < 0 ? '' : rest.slice(close + 1);
    if (close < 0 || (after !== '' && !/^:\d{1,5}$/.test(after))) return { problem: 'an IPv6 host goes in brackets: user@[::1]:22' };
    if (after) port = Number(after.slice(1));
    rest = rest.slice(0, close + 1);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon >= 0) {
      const p = rest.slice(colon + 1);
      if (!/^\d{1,5}$/.test(p)) return { problem: `"${p}" is not a port` };
      port = Number(p);
      rest = rest.slice(0, colon);
    }
  }
  if (!USER_RE.test(user)) return { problem: `"${user}" is not a user name` };
  if (!HOST_RE.test(rest)) return { problem: `"${rest}" is not a host name or address` };
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { problem: `port ${port} is out of range` };
  return { user, host: rest, port };
}

export interface SshForwardOptions {
  target: SshTarget;
  /** Local port to listen on (127.0.0.1). */
  localPort: number;
  /** Where the gateway listens, as seen from the SSH host. */
  remoteHost: string;
  remotePort: number;
  knownHostsFile: string;
  identityFile?: string;
  /** The ssh binary (default `ssh` on PATH). */
  sshPath?: string;
  out(line: string): void;
  /** Called each time the forward (re)opens. */
  onUp?(): void;
  /** Restart delay bounds. */
  backoff?: { baseMs: number; maxMs: number };
}

export interface SshStatus {
  state: 'starting' | 'up' | 'down';
  lastError: string | null;
  restarts: number;
}

/**
 * Keeps `ssh -N -L 127.0.0.1:<local>:<remote>` running: restarted with backoff whenever it
 * exits; `up` once the local port accepts connections.
 */
export class SshForward {
  private child: ChildProcess | null = null;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private delayMs: number;
  private st: SshStatus = { state: 'starting', lastError: null, restarts: 0 };
  private upWaiters: Array<() => void> = [];

  constructor(private readonly opts: SshForwardOptions) {
    this.delayMs = opts.backoff?.baseMs ?? 1_000;
  }

  get status(): SshStatus {
    return { ...this.st };
  }

  /** The args given to ssh (no secret: the key stays in its file). */
  args(): string[] {
    const o = this.opts;
    const host = o.target.host.startsWith('[') ? o.target.host.slice(1, -1) : o.target.host;
    const remoteHost = o.remoteHost.includes(':') ? `[${o.remoteHost}]` : o.remoteHost;
    return [
      '-N',
      '-T',
      // Verbose, for the one line that says the forward's port is bound (see markUp).
      '-v',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${o.knownHostsFile}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'ServerAliveInterval=15',
      '-o',
      'ServerAliveCountMax=3',
      '-o',
      'ConnectTimeout=15',
      ...(o.identityFile ? ['-o', 'IdentitiesOnly=yes', '-i', o.identityFile] : []),
      '-p',
      String(o.target.port),
      '-L',
      `127.0.0.1:${o.localPort}:${remoteHost}:${o.remotePort}`,
      // `--` ends the options: the destination can never be read as one.
      '-l',
      o.target.user,
      '--',
      host,
    ];
  }

  start(): void {
    this.stopped = false;
    this.spawnOnce();
  }

  /** Resolves once the forward accepts connections (or when stopped). */
  waitUp(): Promise<void> {
    if (this.st.state === 'up' || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.upWaiters.push(resolve));
  }

  private markUp(child: ChildProcess): void {
    if (this.child !== child || this.st.state === 'up') return;
    this.st = { ...this.st, state: 'up' };
    this.delayMs = this.opts.backoff?.baseMs ?? 1_000;
    this.opts.out(`ssh: forward 127.0.0.1:${this.opts.localPort} → ${this.opts.remoteHost}:${this.opts.remotePort} via ${this.opts.target.host} is up`);
    for (const w of this.upWaiters.splice(0)) w();
    this.opts.onUp?.();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.child?.kill('SIGTERM');
    this.child = null;
    for (const w of this.upWaiters.splice(0)) w();
  }

  private spawnOnce(): void {
    const child = spawn(this.opts.sshPath ?? 'ssh', this.args(), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.st = { ...this.st, state: 'starting' };
    let stderr = '';
    let pending = '';
    // "Up" is ssh's own word that it bound the port (its verbose log), never a probe of the port:
    // a probe would be answered by whatever else listens there.
    const bound = `Local forwarding listening on 127.0.0.1 port ${this.opts.localPort}.`;
    child.stderr?.on('data', (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '');
        if (line.includes(bound)) this.markUp(child);
        if (!line.startsWith('debug')) stderr = `${stderr}${line}\n`.slice(-2000);
      }
    });
    child.on('error', (err) => {
      this.st.lastError = `cannot run ssh: ${err.message}`;
    });
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      const why = stderr.trim().split('\n').pop() || `ssh exited (${code ?? signal})`;
      this.st = { state: 'down', lastError: why, restarts: this.st.restarts + 1 };
      if (this.stopped) return;
      const delay = this.delayMs;
      this.delayMs = Math.min(this.delayMs * 2, this.opts.backoff?.maxMs ?? 30_000);
      const hint = /Host key verification failed|No .* host key is known/i.test(stderr)
        ? ` — the host key of ${this.opts.target.host} is not in ${this.opts.knownHostsFile}; check its fingerprint, then add it (e.g. \`ssh-keyscan -p ${this.opts.target.port} ${this.opts.target.host} >> ${this.opts.knownHostsFile}\`)`
        : '';
      this.opts.out(`ssh: ${why}${hint}; restarting in ${delay} ms`);
      this.timer = setTimeout(() => {
        if (!this.stopped) this.spawnOnce();
      }, delay);
    });
  }
}

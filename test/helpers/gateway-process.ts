/**
 * A real `clawgate gateway run` process for crash and fuzz testing: start it on a fixed port and
 * state dir, SIGKILL it, start it again, and watch what it writes. The one place the harnesses
 * learn how to authenticate as the owner (connectOwner), so a change there is made once.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { readCredentials } from '../../src/cli/state.js';
import { connectGateway, type GatewayConnection } from '../../src/client/connection.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

export interface GatewayProcessOptions {
  stateDir: string;
  configPath: string;
  port: number;
  /** Extra `gateway run` flags (e.g. `--store postgres`). */
  args?: string[];
  env?: Record<string, string>;
  /** Extra node flags (e.g. `--expose-gc`). */
  nodeArgs?: string[];
  /** How long to wait for "listening on" before calling the start a failure. */
  startTimeoutMs?: number;
}

/** A JSON log line the gateway wrote at level error (a clean start writes none). */
export interface ErrorLine {
  msg: string;
  line: string;
}

export class GatewayProcess {
  private out = '';
  private err = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly opts: GatewayProcessOptions,
  ) {
    child.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get url(): string {
    return `ws://127.0.0.1:${this.opts.port}`;
  }
  get pid(): number {
    return this.child.pid ?? -1;
  }
  get stdout(): string {
    return this.out;
  }
  get stderr(): string {
    return this.err;
  }

  /** Error-level log lines written so far. */
  errorLines(): ErrorLine[] {
    const found: ErrorLine[] = [];
    for (const line of this.err.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const o = JSON.parse(line) as { level?: string; msg?: string };
        if (o.level === 'error') found.push({ msg: String(o.msg), line });
      } catch {
        // A half-written last line of a killed process.
      }
    }
    return found;
  }

  /** Spawn and wait until it listens; rejects (with its output) when it exits or hangs first. */
  static async start(opts: GatewayProcessOptions): Promise<GatewayProcess> {
    const child = spawn(
      process.execPath,
      [...(opts.nodeArgs ?? []), BIN, 'gateway', 'run', '--config', opts.configPath, '--port', String(opts.port), ...(opts.args ?? [])],
      {
        env: { ...process.env, CLAWGATE_STATE_DIR: opts.stateDir, ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const gp = new GatewayProcess(child, opts);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
    let exitedEarly: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    void gp.exited.then((e) => (exitedEarly = e));
    while (!gp.out.includes('listening on')) {
      if (exitedEarly) {
        throw new Error(`gateway exited during startup (${JSON.stringify(exitedEarly)}): ${gp.err.slice(-2000)}`);
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`gateway did not listen within the startup deadline: ${gp.err.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return gp;
  }

  /** SIGKILL: no shutdown code runs, exactly like a power cut for the process. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM and wait; the exit code (0 is a clean stop). */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return (await this.exited).code;
  }
}

/** The owner credential of a state dir (written by the gateway's first start). */
export function ownerCredential(stateDir: string): string {
  const creds = readCredentials(stateDir);
  if (!creds) throw new Error(`no credentials in ${stateDir}`);
  return creds.owner;
}

/** The shared gateway token of a state dir. */
export function sharedToken(stateDir: string): string {
  const creds = readCredentials(stateDir);
  if (!creds) throw new Error(`no credentials in ${stateDir}`);
  return creds.token;
}

/** An admin session as the owner of the gateway at `url` (state dir on this host). */
export function connectOwner(url: string, stateDir: string, timeoutMs = 15_000): Promise<GatewayConnection> {
  // The owner credential is proven to the state dir's gateway key, never sent.
  return connectGateway({
    url,
    owner: ownerCredential(stateDir),
    gatewayKey: readGatewayKeyFingerprint(stateDir),
    client: { id: 'cli', mode: 'cli' },
    timeoutMs,
  });
}

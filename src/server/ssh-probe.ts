/**
 * The SSH proof of approval policies: connect back to the host a node connected from and ask it
 * for its identity (`clawgate node identity --json` by default). The system `ssh` does the work,
 * never prompting (BatchMode) and trusting only host keys already in the configured known_hosts
 * (StrictHostKeyChecking=yes), so the answer comes from that machine or not at all. The command
 * and every option come from the owner's config; the address is the socket peer, an IP.
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import type { SshProbeResult } from '../core/approval-engine.js';
import type { SshProbeConfig } from '../core/approval-policy.js';

const MAX_ANSWER_BYTES = 64 * 1024;

/** The argv for `ssh` (exported for the doctor and tests). */
export function sshProbeArgs(host: string, cfg: SshProbeConfig): string[] {
  const args = [
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${cfg.knownHostsFile}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    `ConnectTimeout=${Math.max(1, Math.ceil(cfg.timeoutMs / 1000))}`,
    '-o',
    'LogLevel=ERROR',
  ];
  if (cfg.identityFile) args.push('-o', 'IdentitiesOnly=yes', '-i', cfg.identityFile);
  if (cfg.port) args.push('-p', String(cfg.port));
  args.push('-l', cfg.user, '--', host, cfg.command);
  return args;
}

export function runSshProbe(host: string, cfg: SshProbeConfig): Promise<SshProbeResult> {
  if (isIP(host) === 0) return Promise.resolve({ ok: false, reason: `not an IP address: ${host}` });
  return new Promise((resolve) => {
    execFile(
      cfg.program ?? 'ssh',
      sshProbeArgs(host, cfg),
      { timeout: cfg.timeoutMs, maxBuffer: MAX_ANSWER_BYTES, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/' } },
      (err, stdout, stderr) => {
        if (err) {
          const why = (stderr || err.message).toString().trim().split('\n').slice(-1)[0] ?? 'ssh failed';
          resolve({ ok: false, reason: `ssh to ${host} failed: ${why.slice(0, 300)}` });
          return;
        }
        try {
          const answer = JSON.parse(stdout.toString()) as { deviceId?: unknown; publicKey?: unknown };
          if (typeof answer.deviceId !== 'string' || typeof answer.publicKey !== 'string') throw new Error('no deviceId/publicKey');
          resolve({ ok: true, deviceId: answer.deviceId, publicKey: answer.publicKey });
        } catch (e) {
          resolve({ ok: false, reason: `the node host's answer is not an identity (${(e as Error).message})` });
        }
      },
    );
  });
}

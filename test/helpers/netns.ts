/**
 * A real non-loopback peer for tests: a network namespace whose only link is a veth pair to this
 * host, so a process run inside it (`ip netns exec <tag> …`) reaches the host from an address that
 * is not loopback, and the host sees that address.
 */
import { execFileSync } from 'node:child_process';

export interface VethNetns {
  tag: string;
  /** This host's end of the veth (10.<octet>.N.1). */
  hostAddr: string;
  /** The namespace's end (10.<octet>.N.2). */
  remoteAddr: string;
  /** Delete the link and the namespace; safe to call twice. */
  destroy(): void;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/**
 * Create namespace `tag` on a /30 in 10.<octet>.N.0 with N the first free one from the pid on
 * (each test file uses its own octet, so parallel files never pick the same subnet). A leftover of
 * an earlier run with the same tag is removed first. Throws, after cleaning up, when `ip netns`
 * is not available (no root, no iproute2).
 */
export function createVethNetns(tag: string, octet: number): VethNetns {
  const hostIf = `${tag}a`;
  const destroy = () => {
    for (const args of [
      ['link', 'del', hostIf],
      ['netns', 'del', tag],
    ]) {
      try {
        ip(...args);
      } catch {}
    }
  };
  destroy();
  try {
    const used = ip('-4', '-o', 'addr', 'show');
    let n = (process.pid % 250) + 1;
    while (used.includes(`10.${octet}.${n}.`)) n = (n % 250) + 1;
    const hostAddr = `10.${octet}.${n}.1`;
    const remoteAddr = `10.${octet}.${n}.2`;
    ip('netns', 'add', tag);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', `${tag}b`);
    ip('link', 'set', `${tag}b`, 'netns', tag);
    ip('addr', 'add', `${hostAddr}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('-n', tag, 'addr', 'add', `${remoteAddr}/30`, 'dev', `${tag}b`);
    ip('-n', tag, 'link', 'set', `${tag}b`, 'up');
    ip('-n', tag, 'link', 'set', 'lo', 'up');
    return { tag, hostAddr, remoteAddr, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}

/**
 * A throwaway nginx in front of several gateway instances: round-robin upstream, WebSocket
 * upgrade headers and X-Forwarded-For, exactly as docs/postgres.md shows (minus TLS).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onFreePort } from './net.js';
import { WS_PROXY_DIRECTIVES } from './nginx.js';

export interface Nginx {
  url: string;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * `upstreams` are ws:// URLs of the instances. nginx is told its port up front; when another
 * process took it first, nginx exits and is started again on a new port. A caller that must know
 * the port before (the instances' publicUrl) passes it and gets no retry.
 */
export function startNginx(upstreams: string[], listenPort?: number): Promise<Nginx> {
  if (listenPort !== undefined) return startNginxOn(upstreams, listenPort);
  return onFreePort(
    (port) => startNginxOn(upstreams, port),
    (err) => /in use/i.test(String(err)),
  );
}

async function startNginxOn(upstreams: string[], port: number): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-nginx-'));
  const servers = upstreams.map((u) => `    server ${new URL(u).host};`).join('\n');
  const conf = `daemon off;
master_process on;
worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream clawgate {
${servers}
  }
  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://clawgate;
${WS_PROXY_DIRECTIVES}
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const proc: ChildProcess = spawn('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  proc.on('error', () => {});
  const deadline = Date.now() + 10_000;
  // nginx writes its pid file only after it bound its port: an open port without it may be
  // another process's.
  while (!(existsSync(join(dir, 'nginx.pid')) && (await portOpen(port)))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      if (proc.exitCode === null) proc.kill('SIGKILL');
      let log = '';
      try {
        log = readFileSync(join(dir, 'error.log'), 'utf8');
      } catch {}
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `ws://127.0.0.1:${port}`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        // SIGQUIT is nginx's graceful stop; open WebSockets would hold it, so SIGTERM (fast) it is.
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

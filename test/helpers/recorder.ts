/**
 * A stranger that answers WebSocket connects the way a port squatter would: it sends one
 * `connect.challenge` (whatever payload the test gives it) and prints every frame a client sends.
 * It is a separate process with no dependencies (node: built-ins only), so a test can run it as
 * another user (`setpriv`) or inside a network namespace (`ip netns exec`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SOURCE = String.raw`
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
const [host, port, challengeJson] = process.argv.slice(2);
const out = (line) => process.stdout.write(line + '\n');
function send(sock, opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : Buffer.from([0x80 | opcode, 126, len >> 8, len & 255]);
  sock.write(Buffer.concat([head, payload]));
}
const server = createServer((_req, res) => {
  res.writeHead(404);
  res.end();
});
server.on('upgrade', (req, sock) => {
  out('CONN');
  sock.on('error', () => {});
  const accept = createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  send(sock, 1, Buffer.from(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: JSON.parse(challengeJson) })));
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 15;
      let len = buf[1] & 127;
      let at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
      const masked = (buf[1] & 128) !== 0;
      const mask = masked ? buf.subarray(at, at + 4) : null;
      if (masked) at += 4;
      if (buf.length < at + len) return;
      const body = Buffer.from(buf.subarray(at, at + len));
      if (mask) for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
      buf = buf.subarray(at + len);
      if (opcode === 1) {
        out('FRAME ' + JSON.stringify(body.toString('utf8')));
        // Answer nothing: close, so the client stops waiting for hello-ok.
        send(sock, 8, Buffer.from([0x03, 0xe8]));
        sock.end();
      } else if (opcode === 8) out('CLOSE');
    }
  });
});
server.listen(Number(port), host, () => out('LISTENING'));
`;

export interface Recorder {
  /** Lines the recorder printed so far (CONN, FRAME "<text>", CLOSE). */
  lines(): string[];
  /** The text of every frame a client sent. */
  frames(): string[];
  stop(): Promise<void>;
}

/**
 * Start the recorder on host:port with this challenge payload. `wrap` turns the node command line
 * into the one to run (e.g. under setpriv, or `ip netns exec`).
 */
export async function startRecorder(host: string, port: number, challenge: unknown, wrap: (argv: string[]) => string[] = (argv) => argv): Promise<Recorder> {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-recorder-'));
  // Readable by another user: the squatter runs as nobody.
  chmodSync(dir, 0o755);
  const script = join(dir, 'recorder.mjs');
  writeFileSync(script, SOURCE, { mode: 0o644 });
  const argv = wrap([process.execPath, script, host, String(port), JSON.stringify(challenge)]);
  const child: ChildProcess = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`recorder did not start: ${out} ${err}`)), 10_000);
    const check = () => {
      if (out.includes('LISTENING')) {
        clearTimeout(deadline);
        resolve();
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(deadline);
      reject(new Error(`recorder exited with ${code}: ${out} ${err}`));
    });
  });
  const lines = () => out.split('\n').filter((l) => l.length > 0);
  return {
    lines,
    frames: () => lines().flatMap((l) => (l.startsWith('FRAME ') ? [JSON.parse(l.slice(6)) as string] : [])),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Loopback ports for test servers. */
import { createServer } from 'node:net';

/** A port free on `host` right now (the OS picks it; the caller binds it next). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * For servers that must be told a port up front (nginx, postgres, a config file under test):
 * another process may take the port between freePort and the bind, so a start that fails with
 * "port in use" is retried on a new port instead of failing the test.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>, inUse: (err: unknown) => boolean, attempts = 5, host = '127.0.0.1'): Promise<T> {
  for (let i = 1; ; i++) {
    const port = await freePort(host);
    try {
      return await start(port);
    } catch (err) {
      if (i >= attempts || !inUse(err)) throw err;
    }
  }
}

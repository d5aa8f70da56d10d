/**
 * What a connection failure means for the person at the terminal, and what to do next. The CLI
 * reaches gateways two ways (the client SDK for every operator command, `pair` and `status
 * --client`, and `doctor`'s probe); a socket that never reached a gateway is reported the same
 * way by both.
 */

import type { ConnectError } from '../client/connection.js';
import { CERT_ERROR_CODES } from '../platform/tls-peer.js';

export interface Explained {
  message: string;
  nextStep: string;
}

/** A failure the CLI reports as `error: …` / `next: …` with exit code 1. */
export class CliFailure extends Error {
  constructor(
    message: string,
    readonly nextStep: string | undefined,
  ) {
    super(message);
  }
}

/**
 * How to start the gateway, as the user would type it on this host (carries their --state-dir);
 * absent when the gateway is another host's (a paired client's).
 */
export type StartHint = string | undefined;

/** The explanation of a socket-level failure code when dialling `url`; null for codes that are not about reaching it. */
export function explainTransport(code: string, url: string, startHint?: StartHint): Explained | null {
  if (code === 'ECONNREFUSED')
    return {
      message: `no gateway is listening on ${url}`,
      nextStep: startHint
        ? `start it with \`${startHint}\` or pass --url <ws-url> (or set CLAWGATE_URL) to reach another gateway`
        : 'start the gateway (`clawgate gateway run` on its host), or pass --url <ws-url> if it moved',
    };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    return { message: `cannot resolve the host name of ${url} (${code})`, nextStep: 'check the host in --url / CLAWGATE_URL, and this machine’s DNS' };
  if (code === 'ETIMEDOUT' || code === 'HANDSHAKE_TIMEOUT')
    return {
      message: `${url} did not answer in time${code === 'HANDSHAKE_TIMEOUT' ? ' (no hello-ok from the gateway)' : ''}`,
      nextStep:
        'check that the gateway runs and that no firewall or proxy holds the connection; `clawgate doctor` on the gateway host checks the URL it advertises',
    };
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH')
    return { message: `no network route to ${url} (${code})`, nextStep: 'check the address in --url and this machine’s network connection' };
  if (code === 'ECONNRESET')
    return {
      message: `${url} closed the connection before a gateway answered`,
      nextStep: 'check that a clawgate gateway listens there (a TLS gateway needs wss://, a plain one ws://)',
    };
  if (code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER')
    return {
      message: `the TLS handshake with ${url} failed (${code})`,
      nextStep: 'a gateway without TLS is reached with ws://, one serving TLS with wss://: check the scheme in --url',
    };
  if (CERT_ERROR_CODES.has(code))
    return {
      message: `the certificate at ${url} is not trusted by this machine (${code})`,
      nextStep:
        'for a gateway serving its own self-signed certificate pass --tls-fingerprint <sha256> (the setup code carries it; `clawgate doctor` on the gateway host prints it)',
    };
  return null;
}

/** A ConnectError from client/connection.ts, explained when the socket never reached a gateway. */
export function explainConnectError(err: ConnectError, startHint?: StartHint): Explained | null {
  return err.transport ? explainTransport(err.transport.code, err.transport.url, startHint) : null;
}

const CODE_IN_MESSAGE = /\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ECONNRESET|EPROTO)\b/;

/** The same explanation for a failure known only by its message (the client SDK reports `connect ECONNREFUSED …`). */
export function explainNetworkMessage(message: string, url: string, startHint?: StartHint): Explained | null {
  const code = CODE_IN_MESSAGE.exec(message)?.[1];
  return code ? explainTransport(code, url, startHint) : null;
}

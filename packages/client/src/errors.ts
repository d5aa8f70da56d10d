/**
 * Typed failures of the SDK. Gateway failures keep the catalogue's `details.code` (see
 * docs/errors.md); failures that happen on the client side have their own small closed set.
 */
import type { DetailCode } from '@clawgate/protocol/errors';

export type ClientErrorCode =
  | 'NOT_CONNECTED'
  | 'CONNECTION_LOST'
  | 'REQUEST_TIMEOUT'
  | 'CLIENT_CLOSED'
  | 'CLIENT_PAUSED'
  | 'INVALID_SETUP_CODE'
  | 'INVALID_GATEWAY_URL'
  | 'CREDENTIAL_STORE_UNREADABLE'
  | 'NO_CREDENTIAL';

/** The error object of a gateway `res` frame (PROTOCOL.md §Frames). */
export interface WireError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  retryable?: boolean;
  retryAfterMs?: number;
}

export class ClientError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly nextStep?: string,
    /** For CLIENT_PAUSED: the gateway's `details.code` that caused the pause, if any. */
    readonly gatewayCode?: string,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

/** A gateway refused a request (or the handshake). `code` is the catalogue's `details.code`. */
export class GatewayCallError extends Error {
  readonly code: DetailCode | string;
  readonly wireCode: string;
  readonly details: Record<string, unknown>;
  readonly nextStep: string | undefined;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  constructor(
    readonly method: string,
    error: WireError,
  ) {
    super(error.message);
    this.name = 'GatewayCallError';
    this.details = error.details ?? {};
    this.wireCode = error.code;
    this.code = typeof this.details.code === 'string' ? this.details.code : error.code;
    this.nextStep = typeof this.details.nextStep === 'string' ? this.details.nextStep : undefined;
    this.retryable = error.retryable === true;
    const after = error.retryAfterMs ?? this.details.retryAfterMs;
    this.retryAfterMs = typeof after === 'number' ? after : undefined;
  }
}

export class CredentialStoreError extends ClientError {
  constructor(message: string) {
    super(
      'CREDENTIAL_STORE_UNREADABLE',
      message,
      'The stored device identity could not be read; the SDK will not replace it. Restore or remove the file, then pair again.',
    );
  }
}

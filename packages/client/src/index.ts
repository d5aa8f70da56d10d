/**
 * @clawgate/client — platform-neutral core. Import `node.ts` (Node: ws, node:crypto, file store)
 * or `browser.ts` (WebSocket, WebCrypto, IndexedDB) for a ready platform; both re-export this.
 */
export { decodeSetupCode, type SetupPayload } from '@clawgate/protocol/setup-code';
export {
  type BackoffOptions,
  type ClientInfo,
  type ClientState,
  type EventListener,
  GatewayClient,
  type GatewayClientOptions,
  type HelloOk,
  type PauseReason,
  type StateListener,
} from './client.js';
export {
  BOOTSTRAP_OPERATOR_SCOPES,
  type CredentialKind,
  cloneRecord,
  hasFallback,
  type ResolvedCredential,
  resolveCredential,
  resolveGivenSecret,
  SHARED_OPERATOR_SCOPES,
} from './credentials.js';
export { ClientError, type ClientErrorCode, CredentialStoreError, GatewayCallError, type WireError } from './errors.js';
export { flavorOfChallenge, type GatewayFlavor, type GatewayHostCommands, gatewayHostCommands } from './gateway-flavor.js';
export { MemoryCredentialStore } from './memory-store.js';
export { type ApplySetupCodeOptions, applySetupCode, ensureRecord, type PairOptions, pairWithSetupCode, parseSetupCode, setSharedToken } from './pairing.js';
export * from './types.js';
export { gatewayKey, isRecoverySafe, type NormalizedUrl, normalizeGatewayUrl } from './url.js';

/**
 * The closed error catalogue. Every failure clawgate puts on the wire is one entry here:
 * its top-level `error.code` (OpenClaw's closed ErrorCodes), the `details.code` clients branch
 * on, the message template, the WebSocket close code (null = the socket stays open) and the
 * next step for the person reading it. docs/errors.md mirrors this table; a test keeps the two
 * in sync, so a code cannot ship undocumented.
 */
import type { ErrorShape } from './frames.js';

export const ERROR_CODES = [
  'NOT_LINKED',
  'NOT_PAIRED',
  'AGENT_TIMEOUT',
  'AGENT_RESULT_NOT_FOUND',
  'INVALID_REQUEST',
  'FORBIDDEN',
  'APPROVAL_NOT_FOUND',
  'UNAVAILABLE',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Close codes used by the gateway (PROTOCOL.md §Close codes). */
export const CLOSE = {
  normal: 1000,
  protocolError: 1002,
  policy: 1008,
  tooLarge: 1009,
  restart: 1012,
  tryAgainLater: 1013,
  /** Same code the reference uses when a device's token for the role was rotated/revoked/removed. */
  deviceRemoved: 4001,
} as const;

export interface CatalogueEntry {
  code: ErrorCode;
  /** Message template; `{name}` placeholders are filled from `vars`. */
  message: string;
  /** WebSocket close code sent after the error frame, or null when the socket stays open. */
  close: number | null;
  /** What the person should do next (also sent as `details.nextStep`). */
  next: string;
  /** Machine hint compatible with the reference (`details.recommendedNextStep`). */
  recommended?: 'retry_with_device_token' | 'update_auth_configuration' | 'update_auth_credentials' | 'wait_then_retry' | 'review_auth_configuration';
  retryable?: boolean;
}

const entries = {
  // --- frames and handshake order -----------------------------------------------------------
  INVALID_FRAME: {
    code: 'INVALID_REQUEST',
    message: 'invalid request frame',
    close: CLOSE.policy,
    next: 'Send JSON text frames of the shape {"type":"req","id","method","params"}; the first one must be `connect`.',
  },
  HANDSHAKE_NOT_CONNECT: {
    code: 'INVALID_REQUEST',
    message: 'invalid handshake: first request must be connect',
    close: CLOSE.policy,
    next: 'Wait for the `connect.challenge` event and send a `connect` request first.',
  },
  INVALID_CONNECT_PARAMS: {
    code: 'INVALID_REQUEST',
    message: 'invalid connect params: {problem}',
    close: CLOSE.policy,
    next: 'Fix the named field of `connect.params` (PROTOCOL.md §connect) and reconnect.',
  },
  HANDSHAKE_TIMEOUT: {
    code: 'INVALID_REQUEST',
    message: 'handshake timeout',
    close: CLOSE.policy,
    next: 'Send `connect` within the handshake timeout (default 15 s) after the challenge.',
  },
  PREAUTH_FRAME_TOO_LARGE: {
    code: 'INVALID_REQUEST',
    message: 'frame too large',
    close: CLOSE.tooLarge,
    next: 'Keep frames before `hello-ok` under 64 KiB, and later frames under `policy.maxPayload`.',
  },
  PROTOCOL_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'protocol mismatch',
    close: CLOSE.protocolError,
    next: 'Upgrade the client: this gateway speaks protocol 4 (3 for nodes and probes).',
  },
  INVALID_ROLE: {
    code: 'INVALID_REQUEST',
    message: 'invalid role',
    close: CLOSE.policy,
    next: 'Use role "operator" or "node".',
  },
  // --- shared secret / token auth -----------------------------------------------------------
  AUTH_REQUIRED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: authentication required',
    close: CLOSE.policy,
    next: 'Pass the gateway token (--token), a device token, or a setup code.',
    recommended: 'update_auth_configuration',
  },
  AUTH_TOKEN_MISSING: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: gateway token missing (provide gateway auth token)',
    close: CLOSE.policy,
    next: 'Pass the gateway token (`clawgate gateway token` on the gateway host prints it), or pair with a setup code.',
    recommended: 'update_auth_configuration',
  },
  AUTH_TOKEN_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: "unauthorized: gateway token mismatch (use this gateway's token or pair the device)",
    close: CLOSE.policy,
    next: 'Use the current gateway token (`clawgate gateway token` on the gateway host), or connect with your device token alone (a wrong gateway token next to it refuses the connect).',
    recommended: 'update_auth_credentials',
  },
  AUTH_TOKEN_NOT_CONFIGURED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: gateway token not configured',
    close: CLOSE.policy,
    next: 'Start the gateway with a token (--token-file, CLAWGATE_GATEWAY_TOKEN or gateway.auth.token) or use its password.',
    recommended: 'update_auth_configuration',
  },
  AUTH_PASSWORD_MISSING: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: gateway password missing',
    close: CLOSE.policy,
    next: 'Pass the gateway password (--password).',
    recommended: 'update_auth_configuration',
  },
  AUTH_PASSWORD_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: gateway password mismatch',
    close: CLOSE.policy,
    next: 'Use the password the gateway was started with.',
    recommended: 'update_auth_credentials',
  },
  AUTH_PASSWORD_NOT_CONFIGURED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: gateway password not configured',
    close: CLOSE.policy,
    next: 'This gateway has no password; use its token instead.',
    recommended: 'update_auth_configuration',
  },
  AUTH_DEVICE_TOKEN_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: device token mismatch (rotate/reissue device token)',
    close: CLOSE.policy,
    next: 'The device token was rotated, revoked or never issued: reconnect with the gateway token to re-pair, or ask an operator to rotate it (`clawgate devices rotate`).',
    recommended: 'update_auth_credentials',
  },
  AUTH_SCOPE_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: device token scope mismatch (re-pair or approve scope upgrade)',
    close: CLOSE.policy,
    next: 'Ask for the scopes your token holds, or reconnect with the gateway token to file a scope upgrade.',
    recommended: 'review_auth_configuration',
  },
  AUTH_BOOTSTRAP_TOKEN_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: setup code invalid, expired, revoked, or already used (create a new code)',
    close: CLOSE.policy,
    next: 'Mint a new setup code on the gateway host (`clawgate qr`).',
    recommended: 'review_auth_configuration',
  },
  AUTH_BOOTSTRAP_TOKEN_EXPIRED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: setup code expired (create a new code)',
    close: CLOSE.policy,
    next: 'Setup codes last 10 minutes unless minted with --ttl: mint a new one on the gateway host (`clawgate qr`) and use it right away.',
    recommended: 'review_auth_configuration',
  },
  AUTH_BOOTSTRAP_TOKEN_USED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: setup code already used (create a new code)',
    close: CLOSE.policy,
    next: 'A setup code pairs one device. If this device redeemed it, reconnect with the device token it received; otherwise mint a new code (`clawgate qr`).',
    recommended: 'review_auth_configuration',
  },
  AUTH_BOOTSTRAP_TOKEN_REVOKED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: setup code revoked (create a new code)',
    close: CLOSE.policy,
    next: 'An operator revoked the code, or it was burned after too many wrong guesses (`details.reason`); mint a new one (`clawgate qr`).',
    recommended: 'review_auth_configuration',
  },
  AUTH_PROXY_USER_MISSING: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: the trusted proxy named no signed-in user',
    close: CLOSE.policy,
    next: 'Sign in through the identity-aware proxy; the gateway admits proxied connections only with the user header it is configured for (gateway.auth.trustedProxyUser.header).',
    recommended: 'review_auth_configuration',
  },
  AUTH_PROXY_USER_NOT_ALLOWED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: this proxy user may not use the gateway',
    close: CLOSE.policy,
    next: 'Ask the owner to add the user to gateway.auth.trustedProxyUser.allowUsers.',
    recommended: 'review_auth_configuration',
  },
  AUTH_RATE_LIMITED: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: too many failed authentication attempts (retry later)',
    close: CLOSE.policy,
    next: 'Wait `retryAfterMs`, then retry with the right credential.',
    recommended: 'wait_then_retry',
    retryable: true,
  },
  // --- owner authority (PROTOCOL.md §Gateway identity and owner proof) -----------------------
  AUTH_OWNER_CREDENTIAL_SENT: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: the owner credential is never sent; prove it with auth.ownerProof instead',
    close: CLOSE.policy,
    next: 'Run the clawgate CLI on the gateway host (it proves the owner credential from the state dir without sending it), or sign in to the Control UI with a `clawgate dashboard` link. A credential that was sent may have been seen: treat it as exposed.',
    recommended: 'update_auth_configuration',
  },
  AUTH_OWNER_PROOF_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: owner proof does not verify (wrong owner credential, or a proof made for another connection)',
    close: CLOSE.policy,
    next: "Use the owner credential of this gateway's state dir; a proof is valid for one connection only, so compute it from this connection's challenge.",
    recommended: 'update_auth_credentials',
  },
  AUTH_OWNER_AUDIENCE_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: owner proof is addressed to another gateway address',
    close: CLOSE.policy,
    next: "Dial the gateway directly at the URL it listens on (or its configured --public-url); an owner proof made for any other address, such as a relay's, is refused.",
    recommended: 'review_auth_configuration',
  },
  // --- device identity and proof ------------------------------------------------------------
  DEVICE_IDENTITY_REQUIRED: {
    code: 'NOT_PAIRED',
    message: 'device identity required',
    close: CLOSE.policy,
    next: 'Sign the connect with the device key (the `device` block), or authenticate with the gateway token.',
  },
  DEVICE_AUTH_DEVICE_ID_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'device identity mismatch',
    close: CLOSE.policy,
    next: 'Send device.id = lowercase hex SHA-256 of the raw 32-byte Ed25519 public key (base64url).',
  },
  DEVICE_AUTH_SIGNATURE_EXPIRED: {
    code: 'INVALID_REQUEST',
    message: 'device signature expired',
    close: CLOSE.policy,
    next: 'Sign with signedAt = the challenge `ts` (or the current time); fix the client clock if it is off by more than 2 minutes.',
  },
  DEVICE_AUTH_NONCE_REQUIRED: {
    code: 'INVALID_REQUEST',
    message: 'device nonce required',
    close: CLOSE.policy,
    next: 'Copy the `connect.challenge` nonce into device.nonce and the signed payload.',
  },
  DEVICE_AUTH_NONCE_MISMATCH: {
    code: 'INVALID_REQUEST',
    message: 'device nonce mismatch',
    close: CLOSE.policy,
    next: "Sign the nonce of this connection's `connect.challenge`, not an older one.",
  },
  DEVICE_AUTH_SIGNATURE_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'device signature invalid',
    close: CLOSE.policy,
    next: 'Sign the v3 payload exactly as PROTOCOL.md §Device proof builds it (scopes in sent order, platform lower-cased).',
  },
  DEVICE_AUTH_PUBLIC_KEY_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'device public key invalid',
    close: CLOSE.policy,
    next: 'Send the raw 32-byte Ed25519 public key as unpadded base64url.',
  },
  // --- pairing ------------------------------------------------------------------------------
  PAIRING_REQUIRED: {
    code: 'NOT_PAIRED',
    message: 'pairing required: {detail}',
    close: CLOSE.policy,
    next: 'Ask an operator to approve the request: `clawgate devices approve <requestId>` on the gateway host, or the Control UI.',
    recommended: 'review_auth_configuration',
  },
  PAIRING_REJECTED: {
    code: 'NOT_PAIRED',
    message: 'pairing rejected',
    close: CLOSE.policy,
    next: 'An operator rejected this device; ask them to approve a new request, then reconnect.',
  },
  PAIRING_DENIED_BY_POLICY: {
    code: 'NOT_PAIRED',
    message: 'pairing denied by approval policy {rule}',
    close: CLOSE.policy,
    next: 'The gateway owner configured rule `details.rule` in gateway.approvals.policies to refuse such requests; no request was filed. Ask the owner (docs/approvals.md).',
  },
  // --- device management (socket stays open) -----------------------------------------------
  UNKNOWN_REQUEST_ID: {
    code: 'INVALID_REQUEST',
    message: 'unknown requestId: {requestId}',
    close: null,
    next: 'The request was approved, rejected or expired, or never existed; `details.pending` lists the current requests (`clawgate devices list`).',
  },
  UNKNOWN_DEVICE: {
    code: 'INVALID_REQUEST',
    message: 'unknown deviceId: {deviceId} (openclaw devices list or clawgate devices list shows the paired devices)',
    close: null,
    next: 'Check the id with `clawgate devices list`.',
  },
  APPROVAL_DENIED: {
    code: 'FORBIDDEN',
    message: 'device pairing approval denied: {why}',
    close: null,
    next: 'Approve from a session holding the named scope (the owner CLI on the gateway host can approve anything).',
  },
  APPROVAL_ALREADY_RECORDED: {
    code: 'INVALID_REQUEST',
    message: '{approver} already approved request {requestId} ({received}/{required} approvals)',
    close: null,
    next: 'A request under quorum needs approvals from distinct approvers: ask another administrator (another approved device, or the owner CLI) to approve it (`details.approvals` shows who has).',
  },
  QUORUM_APPROVER_UNIDENTIFIED: {
    code: 'FORBIDDEN',
    message: 'request {requestId} needs {required} approvals from distinct approvers, and this session is no identifiable approver',
    close: null,
    next: 'Approve from a paired device (each device counts once) or with the owner CLI on the gateway host; a shared token without a device key cannot be told apart from the next one.',
  },
  APPROVAL_LINK_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'approval link {reason}',
    close: null,
    next: 'Each link in an approval notification opens the request once and expires; open the Control UI and find the request in the pending list (`clawgate devices list` shows it too).',
  },
  EXPLAIN_TARGET_UNKNOWN: {
    code: 'INVALID_REQUEST',
    message: 'no device, device name or pending request matches {target}',
    close: null,
    next: 'Pass a device id, a device name or a request id as `clawgate devices list` shows them.',
  },
  EXPLAIN_TARGET_AMBIGUOUS: {
    code: 'INVALID_REQUEST',
    message: 'the name {target} matches {count} devices',
    close: null,
    next: 'Pass the device id instead (`details.deviceIds` lists the matches).',
  },
  MANAGEMENT_DENIED: {
    code: 'FORBIDDEN',
    message: '{action} denied: {why}',
    close: null,
    next: 'Manage other devices, or node roles, from an operator.admin session or the owner CLI on the gateway host.',
  },
  GRANT_NOT_TIME_BOUND: {
    code: 'INVALID_REQUEST',
    message: 'role {role} of device {deviceId} does not expire, so there is nothing to extend',
    close: null,
    next: "Only a time-bound grant (approved with --ttl or by a policy with a ttl) can be extended; `clawgate devices list` shows each role's expiry.",
  },
  ROLE_NOT_GRANTED: {
    code: 'INVALID_REQUEST',
    message: 'device {deviceId} does not hold role {role} (openclaw devices list or clawgate devices list shows its roles)',
    close: null,
    next: 'Rotate or revoke a role the device holds (`clawgate devices list` shows them); approve a pairing request to add a role.',
  },
  SETUP_PROFILE_UNDER_QUORUM: {
    code: 'FORBIDDEN',
    message: 'a setup code cannot grant {scopes}: gateway.approvals.quorum needs {required} approvals for it',
    close: CLOSE.policy,
    next: 'Mint a code without the scopes under quorum (`clawgate qr --scopes operator.read`); once the device is paired, it asks for the rest and its approvers approve it (`details.scopes` names the scopes).',
  },
  UNKNOWN_SETUP_ID: {
    code: 'INVALID_REQUEST',
    message: 'unknown setupId: {setupId}',
    close: null,
    next: 'List the setup codes with `clawgate qr --list`.',
  },
  // --- method dispatch (socket stays open) --------------------------------------------------
  MISSING_SCOPE: {
    code: 'FORBIDDEN',
    message: 'missing scope: {scope}{pending}',
    close: null,
    next: 'Ask an operator to approve the pending scope upgrade (`clawgate devices approve <requestId>`), or reconnect asking for that scope.',
  },
  ROLE_NOT_ALLOWED: {
    code: 'FORBIDDEN',
    message: 'method {method} requires role {role}',
    close: null,
    next: 'Call this method from a connection with the named role.',
  },
  UNKNOWN_METHOD: {
    code: 'INVALID_REQUEST',
    message: 'unknown method: {method}',
    close: null,
    next: 'Check `hello-ok.features.methods` for the methods this gateway offers.',
  },
  INVALID_PARAMS: {
    code: 'INVALID_REQUEST',
    message: 'invalid params for {method}: {problem}',
    close: null,
    next: "Fix the named parameter (PROTOCOL.md lists each method's params).",
  },
  TEXT_NOT_PRINTABLE: {
    code: 'INVALID_REQUEST',
    message: 'invalid params for {method}: {field} contains {kind} ({codePoint})',
    close: null,
    next: 'Names people read may not hold control, bidirectional or invisible format characters (docs/security.md §Client strings): remove them and retry.',
  },
  DUPLICATE_REQUEST_ID: {
    code: 'INVALID_REQUEST',
    message: 'request id already in flight: {id}',
    close: null,
    next: 'Use a fresh id for every request on a connection.',
  },
  INTERNAL_ERROR: {
    code: 'UNAVAILABLE',
    message: 'internal error ({ref})',
    close: null,
    next: 'Retry; if it persists, report the reference shown in the message with the gateway log.',
    retryable: true,
  },
  STORE_UNAVAILABLE: {
    code: 'UNAVAILABLE',
    message: 'the gateway database is unavailable ({cause}); retry',
    close: null,
    next: 'Retry with backoff; the gateway recovers by itself when the database answers again. An operator runs `clawgate doctor` (docs/reliability.md §Database and disk faults).',
    retryable: true,
  },
  // --- live authority changes (close only, no error frame) ----------------------------------
  TOKEN_ROTATED: {
    code: 'NOT_PAIRED',
    message: 'device token rotated',
    close: CLOSE.deviceRemoved,
    next: 'Reconnect with the new token: a self-rotation returned it in-band; a connected device rotated by an operator received it just before this close as the event `device.token.rotated`. Otherwise reconnect with the gateway token or a new setup code.',
  },
  TOKEN_REVOKED: {
    code: 'NOT_PAIRED',
    message: 'device token revoked',
    close: CLOSE.deviceRemoved,
    next: 'The role was revoked; reconnect to file a new pairing request and ask an operator to approve it.',
  },
  DEVICE_REMOVED: {
    code: 'NOT_PAIRED',
    message: 'device removed',
    close: CLOSE.deviceRemoved,
    next: 'The device was removed; reconnect to file a new pairing request.',
  },
  SCOPES_REDUCED: {
    code: 'NOT_PAIRED',
    message: 'device scopes reduced',
    close: CLOSE.deviceRemoved,
    next: 'Reconnect asking for the scopes the device still holds (`clawgate devices list` shows them).',
  },
  GRANT_EXPIRED: {
    code: 'NOT_PAIRED',
    message: 'time-bound grant expired',
    close: CLOSE.deviceRemoved,
    next: 'The role was approved for a limited time (hello-ok.auth.expiresAtMs said until when); reconnect to file a new request, or ask an operator to extend it first (`clawgate devices extend`).',
  },
  // --- gateway lifecycle --------------------------------------------------------------------
  SHUTTING_DOWN: {
    code: 'UNAVAILABLE',
    message: 'service restart',
    close: CLOSE.restart,
    next: 'The gateway is stopping; reconnect with backoff.',
    retryable: true,
  },
  SLOW_CONSUMER: {
    code: 'UNAVAILABLE',
    message: 'slow consumer',
    close: CLOSE.policy,
    next: 'Read frames faster; the outbound buffer passed `policy.maxBufferedBytes`.',
  },
  // --- nodes: command surfaces and node.invoke (socket stays open) -------------------
  UNKNOWN_NODE: {
    code: 'INVALID_REQUEST',
    message: 'unknown node: {nodeId} (openclaw nodes list or clawgate nodes list shows the nodes)',
    close: null,
    next: 'Check the node id or name with `clawgate nodes list`.',
  },
  UNKNOWN_NODE_REQUEST_ID: {
    code: 'INVALID_REQUEST',
    message: 'unknown requestId: {requestId}',
    close: null,
    next: 'The surface request was approved, rejected or replaced by a newer one, or never existed; `details.pending` lists the current ones (`clawgate nodes pending`).',
  },
  NODE_REQUEST_IS_DEVICE_REQUEST: {
    code: 'INVALID_REQUEST',
    message:
      '{requestId} is a device pairing request (role {role}), not a node command request: {verb} it with openclaw devices {verb} {requestId} (or clawgate devices {verb} {requestId})',
    close: null,
    next: 'Decide the device pairing first; once the node connects, its command surface is a separate request listed by `openclaw nodes pending` (`clawgate nodes pending`).',
  },
  NODE_APPROVAL_DENIED: {
    code: 'FORBIDDEN',
    message: 'node surface approval denied: {why}',
    close: null,
    next: 'Approve from a session holding `details.requiredScopes` (host-level commands such as system.run need operator.admin), or with the owner CLI on the gateway host.',
  },
  NODE_NOT_CONNECTED: {
    code: 'UNAVAILABLE',
    message: 'node {nodeId} is not connected',
    close: null,
    next: 'Start the node host (it reconnects by itself), then invoke again; `clawgate nodes list` shows which nodes are connected.',
  },
  NODE_COMMAND_NOT_DECLARED: {
    code: 'INVALID_REQUEST',
    message: 'node {nodeId} does not offer command {command}',
    close: null,
    next: 'Invoke a command the node declared (`clawgate nodes describe <node>`), or restart the node host with that command enabled.',
  },
  NODE_COMMAND_NOT_APPROVED: {
    code: 'FORBIDDEN',
    message: 'command {command} of node {nodeId} is not approved',
    close: null,
    next: 'Approve the node surface request named in `details.requestId` (`clawgate nodes approve <requestId>`), then invoke again: a refused invocation is never queued.',
  },
  NODE_SURFACE_PENDING: {
    code: 'UNAVAILABLE',
    message:
      'node capability surface is awaiting operator approval; run clawgate nodes approve {requestId} (see clawgate nodes pending), then this node retries automatically',
    close: null,
    next: 'An operator approves the surface on the gateway host; the node is told with `node.pair.resolved` on its open socket.',
  },
  NODE_BUSY: {
    code: 'UNAVAILABLE',
    message: 'node {nodeId} is busy: {limit} invocations already in flight',
    close: null,
    next: 'Wait for running invocations to finish, then retry.',
    retryable: true,
  },
  NODE_INVOKE_TIMEOUT: {
    code: 'UNAVAILABLE',
    message: 'node {nodeId} did not answer {command} within {timeoutMs} ms',
    close: null,
    next: 'The node was told to cancel it. Retry with a longer timeoutMs if the command is slow, or check the node host.',
  },
  NODE_DISCONNECTED: {
    code: 'UNAVAILABLE',
    message: 'node {nodeId} disconnected before answering {command}',
    close: null,
    next: 'The command may or may not have run on the node. Wait for the node to reconnect (`clawgate nodes list`), then decide whether to invoke again.',
  },
  NODE_INVOKE_CANCELLED: {
    code: 'UNAVAILABLE',
    message: 'invocation of {command} on node {nodeId} was cancelled',
    close: null,
    next: 'The caller cancelled the request; the node was told to stop.',
  },
  NODE_INVOKE_FAILED: {
    code: 'UNAVAILABLE',
    message: 'node {nodeId} could not run {command}: {nodeMessage}',
    close: null,
    next: 'The node refused or failed the command; `details.nodeError` holds its own code and message (for system.run check the node host exec policy).',
  },
  NODE_PAYLOAD_TOO_LARGE: {
    code: 'INVALID_REQUEST',
    message: '{what} too large: {bytes} bytes (limit {limitBytes})',
    close: null,
    next: 'Send less data per invocation (node.invoke params and results have a byte limit, PROTOCOL.md §19).',
  },
  // --- node host (`clawgate node run`): errors a node returns in node.invoke.result ---------
  NODE_COMMAND_UNSUPPORTED: {
    code: 'UNAVAILABLE',
    message: 'command not supported: {command}',
    close: null,
    next: 'This node host implements system.run and system.which; call one of those, or a node that implements the command.',
  },
  NODE_INVOKE_PARAMS_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'invalid {command} params: {problem}',
    close: null,
    next: 'Fix the named field of the invoke params (docs/node-host.md lists them).',
  },
  NODE_EXEC_DENIED: {
    code: 'FORBIDDEN',
    message: '{detail}',
    close: null,
    next: "Widen the node's exec policy on the node itself: add the executable to exec-allowlist.json in its state dir, or run it with --exec-policy full.",
  },
  NODE_EXEC_NOT_FOUND: {
    code: 'INVALID_REQUEST',
    message: 'executable not found on the node: {name}',
    close: null,
    next: "Install it on the node or give an absolute path; `system.which` shows what the node's PATH holds.",
  },
  NODE_HOST_BUSY: {
    code: 'UNAVAILABLE',
    message: 'node busy, retry (at most {limit} invokes run at once)',
    close: null,
    next: 'Retry when one of the running invokes has finished.',
    retryable: true,
  },
  // --- automations: sessions, chat, channels, cron (socket stays open) ---------------
  UNKNOWN_SESSION: {
    code: 'INVALID_REQUEST',
    message: 'unknown session: {session}',
    close: null,
    next: 'List sessions with `sessions.list` (or `clawgate sessions list`), or create it with `sessions.create`.',
  },
  SESSION_KEY_TAKEN: {
    code: 'INVALID_REQUEST',
    message: 'session key already exists: {key}',
    close: null,
    next: 'Use the existing session, or choose another key.',
  },
  UNKNOWN_CHANNEL: {
    code: 'INVALID_REQUEST',
    message:
      'unknown channel: {channel} (clawgate channels list shows the webhook channels; openclaw channels status shows them as accounts of channel webhook)',
    close: null,
    next: 'List channels with `clawgate channels list`; add one with `clawgate channels add webhook --name <n> --url <u>`.',
  },
  CHANNEL_NAME_TAKEN: {
    code: 'INVALID_REQUEST',
    message: 'channel name already exists: {name}',
    close: null,
    next: 'Remove the existing channel first (`clawgate channels remove <name>`), or choose another name; channels from the config file change only there.',
  },
  INVALID_WEBHOOK_URL: {
    code: 'INVALID_REQUEST',
    message: 'invalid webhook url: {problem}',
    close: null,
    next: 'Give an absolute http:// or https:// URL.',
  },
  EMPTY_MESSAGE: {
    code: 'INVALID_REQUEST',
    message: 'nothing to send: give content or embeds',
    close: null,
    next: 'Pass `content` (text) or at least one embed.',
  },
  UNKNOWN_CRON_JOB: {
    code: 'INVALID_REQUEST',
    message: 'cron job not found: {jobId}',
    close: null,
    next: 'List jobs with `clawgate cron list` (or `openclaw cron list --all`); a job is named by its id, or by its name when exactly one job has it.',
  },
  INVALID_SCHEDULE: {
    code: 'INVALID_REQUEST',
    message: 'invalid schedule: {problem}',
    close: null,
    next: 'Use a 5-field cron expression (`*/5 * * * *`) with an optional IANA time zone, or an interval of at least 1s (docs/automations.md).',
  },
  CRON_ACTION_UNAVAILABLE: {
    code: 'INVALID_REQUEST',
    message: 'cron action {action} is not available: {why}',
    close: null,
    next: 'Choose a `chat` or `send` action, or a node command that needs no more than operator.write (commands whose invocation needs admin, such as browser.proxy or fs.listDir, are refused: automations never hold admin).',
  },
  // --- Control UI ----------------------------------------------------------------
  AUTH_DASHBOARD_LINK_INVALID: {
    code: 'INVALID_REQUEST',
    message: 'unauthorized: sign-in link is invalid, expired or already used',
    close: CLOSE.policy,
    next: 'A sign-in link works once, for a few minutes: run `clawgate dashboard` on the gateway host for a new one, or sign in with the owner credential.',
    recommended: 'update_auth_credentials',
  },
} as const satisfies Record<string, CatalogueEntry>;

export type DetailCode = keyof typeof entries;
export const CATALOGUE: Readonly<Record<DetailCode, CatalogueEntry>> = entries;

export function fillTemplate(template: string, vars: Record<string, string | number> = {}): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in vars ? String(vars[name]) : whole));
}

export interface GatewayErrorInit {
  vars?: Record<string, string | number>;
  details?: Record<string, unknown>;
  retryAfterMs?: number;
}

/** A failure as a value: what a handler or the handshake returns for an expected failure. */
export class GatewayError {
  readonly detail: DetailCode;
  readonly shape: ErrorShape;
  constructor(detail: DetailCode, init: GatewayErrorInit = {}) {
    const entry = CATALOGUE[detail];
    this.detail = detail;
    const details: Record<string, unknown> = { code: detail, ...init.details };
    if (entry.recommended && details.recommendedNextStep === undefined) details.recommendedNextStep = entry.recommended;
    if (details.nextStep === undefined) details.nextStep = entry.next;
    this.shape = { code: entry.code, message: fillTemplate(entry.message, init.vars), details };
    if (entry.retryable) this.shape.retryable = true;
    if (init.retryAfterMs !== undefined) this.shape.retryAfterMs = init.retryAfterMs;
  }
  get close(): number | null {
    return CATALOGUE[this.detail].close;
  }
}

export function isGatewayError(value: unknown): value is GatewayError {
  return value instanceof GatewayError;
}

/** Close reasons are the message cut to the WebSocket limit on a UTF-8 boundary. */
export function closeReason(message: string, maxBytes = 120): string {
  const buf = Buffer.from(message, 'utf8');
  if (buf.length <= maxBytes) return message;
  let end = maxBytes;
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString('utf8');
}

/**
 * The Control UI: one page, four views (pending requests, devices and nodes, setup codes,
 * audit log), kept current by gateway events. Plain DOM, no framework, no inline script or
 * style (the page is served under a strict CSP). Every string that came from the network is
 * put in the page as text, never as HTML: device names are chosen by whoever asks to pair.
 *
 * Sign-in: the owner credential or the gateway token, pasted once, or a one-time link from
 * `clawgate dashboard` (`#login=…`, removed from the address bar at once). A pasted owner
 * credential never leaves the page: it keys an HMAC (WebCrypto) over the connection's challenge
 * (PROTOCOL.md §Gateway identity and owner proof); only the gateway token is sent as it is. The browser is a
 * device (key in IndexedDB, see identity.ts); its device token lives in sessionStorage only,
 * so closing the tab or logging out forgets it.
 */
import {
  browserPlatform,
  ClientError,
  type ClientState,
  ensureRecord,
  GatewayCallError,
  GatewayClient,
  normalizeGatewayUrl,
} from '../../../packages/client/dist/browser.js';
import { confirmationCode } from '../../../packages/protocol/dist/confirmation.js';
import { audienceOf, ownerProofPayload } from '../../../packages/protocol/dist/gateway-proof.js';
import { printableLines } from '../../../packages/protocol/dist/text.js';
import type {
  AuditEntryView as AuditEntry,
  DeviceView,
  SetupMintView as MintResult,
  NodePendingView,
  NodeView,
  PendingView,
  PresenceEvent as PresenceView,
  SetupView,
} from '../../../packages/protocol/dist/views.js';
import { encodeQr, qrPath } from './qr.js';
import { SessionCredentialStore } from './session-store.js';

// The views of gateway data (device.pair.list, setupStatus, audit.list …) are the protocol module's.

interface Approvals {
  received: number;
  required: number;
  approvers: string[];
}

/** What `device.explain` answers (core/explain.ts). */
interface Explanation {
  deviceId: string;
  roles: Array<{ role: string; scopes: string[]; sinceMs: number; approvedVia: string; approvedBy: string | null; expiresAtMs: number | null }>;
  pending: Array<{ requestId: string; type: string; role: string; adds: string[]; approvals: Approvals; needs: string; command: string }>;
  call?: { method: string; allowed: boolean; code: string | null; missing: string | null; fix: string | null; requiredScopes: string[] };
}

type Tab = 'pending' | 'devices' | 'setup' | 'audit';
type ConnState = 'starting' | 'signed-out' | 'connecting' | 'waiting' | 'connected' | 'reconnecting' | 'unsupported';

interface Problem {
  message: string;
  nextStep?: string;
  code?: string;
}

const state = {
  identity: null as { deviceId: string; publicKey: string } | null,
  sdk: null as GatewayClient | null,
  /** The SDK client while it is connected (requests go through it). */
  client: null as GatewayClient | null,
  hello: null as { auth: { scopes: string[] }; server: { connId: string } } | null,
  conn: 'starting' as ConnState,
  connDetail: '',
  tab: 'pending' as Tab,
  pending: [] as PendingView[],
  paired: [] as DeviceView[],
  setups: [] as SetupView[],
  audit: [] as AuditEntry[],
  nodePending: [] as NodePendingView[],
  nodes: [] as NodeView[],
  loaded: { list: false, setups: false, audit: false },
  tabProblems: {} as Partial<Record<Tab | 'nodes', Problem>>,
  problems: [] as Problem[],
  minted: null as MintResult | null,
  confirm: null as string | null,
  renaming: null as { deviceId: string; draft: string } | null,
  mintForm: { profile: 'operator', label: '', ttl: '600000' },
  auditFilter: { action: '', actor: '', subject: '' },
  /**
   * The devices view shows one page of device.pair.list at a time: `cursors[i]` is the cursor
   * that fetched page i (none for the first), `next` the one of the page after (null: last page).
   */
  devicePages: { search: '', cursors: [undefined] as Array<string | undefined>, index: 0, next: null as string | null, timer: 0 },
  credentialDraft: '',
  /** Something the person should know that is not an error. */
  notice: '',
  waiting: null as { requestId: string; confirmationCode?: string } | null,
  /** The one-time link of an approval notification (`#request=…`), redeemed once signed in. */
  requestLink: null as string | null,
  /** The request a notification link opened: its card is marked and scrolled to. */
  focusRequestId: null as string | null,
  /** `device.explain` answers by device id, and the method each card asks about. */
  explain: {} as Record<string, Explanation | Problem | 'loading'>,
  explainMethod: {} as Record<string, string>,
  loggingOut: false,
  refreshTimer: 0,
};

// --- DOM helpers ----------------------------------------------------------------------------

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | undefined | ((e: Event) => void)>;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v as string;
    else if (k === 'value' && (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement)) el.value = String(v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  // Text is appended as text (never parsed as HTML); control, bidi and invisible characters are
  // shown as \uXXXX escapes so a name cannot reorder or hide what is around it (protocol/text.ts).
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'string' ? printableLines(c) : c);
  return el;
}

const ago = (ms: number | null | undefined): string => {
  if (ms === null || ms === undefined) return 'never';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return `in ${fmtSpan(-s)}`;
  return s < 5 ? 'just now' : `${fmtSpan(s)} ago`;
};
const fmtSpan = (s: number) => (s < 60 ? `${s}s` : s < 3600 ? `${Math.round(s / 60)}m` : s < 86400 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`);
const when = (ms: number | null | undefined) => (ms === null || ms === undefined ? 'never' : new Date(ms).toLocaleString());
const timeEl = (ms: number | null | undefined) => h('time', { title: when(ms), ...(ms ? { datetime: new Date(ms).toISOString() } : {}) }, ago(ms));
const shortId = (id: string) => `${id.slice(0, 12)}…`;

function problemOf(err: unknown): Problem {
  if (err instanceof GatewayCallError) {
    return { message: err.message, ...(err.nextStep ? { nextStep: err.nextStep } : {}), code: String(err.code) };
  }
  if (err instanceof ClientError) return { message: err.message, ...(err.nextStep ? { nextStep: err.nextStep } : {}), code: err.code };
  return { message: (err as Error)?.message ?? String(err), nextStep: 'Check the connection state above; reload the page if it persists.' };
}

function report(err: unknown): void {
  state.problems = [problemOf(err), ...state.problems].slice(0, 5);
  render();
}

// --- connection (SDK-CORE: @clawgate/client does the handshake, retries and pairing wait) -----

const UI_CLIENT = { id: 'openclaw-control-ui', mode: 'ui', version: '0.1.0', displayName: 'Control UI (browser)' };
/** What the page asks for; the gateway grants what the credential or an approver allows. */
const UI_SCOPES = ['operator.admin', 'operator.approvals', 'operator.pairing', 'operator.read', 'operator.write'];
const platform = browserPlatform({ platformName: 'web' });
const store = new SessionCredentialStore();

/** The gateway's WebSocket is at the page's own directory (`/`, or the context path `/clawgate/`). */
function wsUrl(): string {
  const dir = location.pathname.slice(0, location.pathname.lastIndexOf('/') + 1) || '/';
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${dir}`;
}
const target = normalizeGatewayUrl(wsUrl());

function setConn(conn: ConnState, detail = ''): void {
  state.conn = conn;
  state.connDetail = detail;
  render();
}

/**
 * A pasted owner credential (`cgo_…`) is proven, never sent: an HMAC keyed by it over this
 * connection's nonce, the gateway key the challenge carries and the address this page dials.
 * Anything else is the gateway token, which the SDK sends as it is.
 */
async function proveOwner(
  secret: string,
  challenge: { nonce: string; gateway?: unknown },
  url: string,
): Promise<{ ownerProof: string; ownerAudience: string } | null> {
  if (!secret.startsWith('cgo_')) return null;
  const publicKey = (challenge.gateway as { publicKey?: unknown } | undefined)?.publicKey;
  const audience = audienceOf(url);
  if (typeof publicKey !== 'string' || !audience) throw new Error('the gateway did not prove its key, so the owner credential is not used here');
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(ownerProofPayload(challenge.nonce, publicKey, audience))));
  let bin = '';
  for (const b of mac) bin += String.fromCharCode(b);
  return { ownerProof: btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''), ownerAudience: audience };
}

/** A fresh SDK client for this page; the previous one (if any) is closed for good. */
function startClient(): void {
  state.sdk?.close();
  const c = new GatewayClient({ url: target.url, store, platform, scopes: UI_SCOPES, client: UI_CLIENT, waitForApproval: true, ownerProof: proveOwner });
  state.sdk = c;
  c.on('*', (event, payload) => {
    if (state.sdk === c) onGatewayEvent(event, payload);
  });
  c.onState((st) => {
    if (state.sdk === c) void onClientState(c, st);
  });
  c.start();
}

async function onClientState(c: GatewayClient, st: ClientState): Promise<void> {
  if (state.loggingOut) return;
  switch (st.status) {
    case 'connecting':
      state.client = null;
      if (st.attempt > 0) {
        const wait = st.retryAtMs ? `; retrying in ${Math.max(0, Math.round((st.retryAtMs - Date.now()) / 1000))}s` : '';
        setConn('reconnecting', `${st.lastError?.message ?? 'connection lost'}${wait} (attempt ${st.attempt})`);
      } else setConn('connecting');
      return;
    case 'awaiting-approval': {
      const publicKey = state.identity?.publicKey;
      state.waiting = {
        requestId: st.requestId ?? '',
        ...(st.requestId && publicKey ? { confirmationCode: confirmationCode({ requestId: st.requestId, publicKey }) } : {}),
      };
      setConn('waiting');
      return;
    }
    case 'connected': {
      state.waiting = null;
      state.credentialDraft = '';
      state.client = c;
      state.hello = { auth: { scopes: [...st.scopes] }, server: { connId: c.session?.server.connId ?? '' } };
      setConn('connected');
      void refreshAll();
      if (state.requestLink) void openRequestLink(c, state.requestLink);
      if (store.tabToken(target.key)) {
        // Signed in: the pasted secret was for this one sign-in; never fall back to it later
        // (a revoked browser must stay out, not quietly sign in again).
        await store.update(target.key, (r) => (r ? { ...r, sharedToken: undefined } : r));
      } else await obtainTabToken(c);
      return;
    }
    case 'paused':
      state.client = null;
      state.hello = null;
      store.forgetSession(target.key);
      state.problems = [{ message: st.message, nextStep: st.nextStep, ...(st.code ? { code: st.code } : {}) }];
      setConn('signed-out');
      return;
    default:
      return;
  }
}

/**
 * Redeem a notification's one-time link (only now, signed in: the link is no credential) and
 * point the Pending view at its request.
 */
async function openRequestLink(c: GatewayClient, token: string): Promise<void> {
  state.requestLink = null;
  try {
    const r = await c.request<{ requestId: string; pending: boolean }>('approval.link.open', { token });
    state.tab = 'pending';
    state.focusRequestId = r.requestId;
    state.notice = r.pending ? `Opened request ${r.requestId} from a notification link.` : `Request ${r.requestId} was already decided (or expired).`;
  } catch (err) {
    state.problems = [problemOf(err)];
  }
  render();
  document.querySelector('[data-focused="true"]')?.scrollIntoView({ block: 'center' });
}

async function explainDevice(deviceId: string): Promise<void> {
  const client = state.client;
  if (!client) return;
  state.explain[deviceId] = 'loading';
  render();
  const method = state.explainMethod[deviceId]?.trim();
  try {
    state.explain[deviceId] = await client.request<Explanation>('device.explain', { target: deviceId, ...(method ? { method } : {}) });
  } catch (err) {
    state.explain[deviceId] = problemOf(err);
  }
  render();
}

/**
 * This browser was paired before (an earlier session, or another tab that is still open): the
 * gateway keeps only a hash of its token, so it cannot hand it out again. Rotating gives this
 * tab a fresh one — but rotation closes every socket holding the old token, so do it only when
 * no other tab of this browser is connected; otherwise this tab works without a token (a reload
 * asks for the credential again) rather than signing the other tab out.
 */
async function obtainTabToken(c: GatewayClient): Promise<void> {
  const self = state.identity;
  if (!self || !state.hello) return;
  try {
    const presence = await c.request<Array<{ connId: string; deviceId: string | null }>>('system-presence', {});
    if (presence.some((p) => p.deviceId === self.deviceId && p.connId !== state.hello?.server.connId)) {
      state.notice = 'Another tab of this browser is signed in and holds its device token, so this tab keeps none: reloading it asks for the credential again.';
      render();
      return;
    }
    // The gateway answers, then closes this socket (token rotated); the SDK reconnects at once
    // with the token stored here.
    const r = await c.request<{ token?: string; scopes?: string[] }>('device.token.rotate', { deviceId: self.deviceId, role: 'operator' });
    if (r.token) await keepTabToken(r.token, r.scopes ?? state.hello.auth.scopes);
  } catch (err) {
    report(err);
  }
}

async function keepTabToken(token: string, scopes: string[]): Promise<void> {
  await store.update(target.key, (r) =>
    r ? { ...r, sharedToken: undefined, tokens: { ...r.tokens, operator: { token, scopes: [...scopes], storedAtMs: Date.now() } } } : r,
  );
}

/** Sign in with a pasted credential or a one-time link (kept in memory for this attempt only). */
async function signIn(secret: string): Promise<void> {
  state.problems = [];
  state.notice = '';
  await store.update(target.key, (r) => (r ? { ...r, sharedToken: secret, tokens: {} } : r));
  setConn('connecting', 'signing in');
  startClient();
}

async function logout(): Promise<void> {
  state.loggingOut = true;
  const c = state.client;
  const self = state.identity;
  // Forget the secrets first, so the client cannot sign in again by itself when the revocation
  // closes its socket; then end this browser's grant on the gateway, so a copied token is worthless.
  store.forgetSession(target.key);
  if (c && self) await c.request('device.token.revoke', { deviceId: self.deviceId, role: 'operator' }).catch(() => undefined);
  state.sdk?.close();
  state.sdk = null;
  sessionStorage.clear();
  Object.assign(state, {
    client: null,
    hello: null,
    pending: [],
    paired: [],
    setups: [],
    audit: [],
    nodePending: [],
    nodes: [],
    minted: null,
    notice: '',
    problems: [],
    tabProblems: {},
    confirm: null,
    renaming: null,
    requestLink: null,
    focusRequestId: null,
    explain: {},
    explainMethod: {},
    loaded: { list: false, setups: false, audit: false },
    loggingOut: false,
  });
  setConn('signed-out');
}

// --- data -----------------------------------------------------------------------------------

async function load<T>(tab: Tab | 'nodes', method: string, params: unknown, apply: (v: T) => void): Promise<void> {
  const client = state.client;
  if (!client) return;
  try {
    apply(await client.request<T>(method, params));
    delete state.tabProblems[tab];
  } catch (err) {
    state.tabProblems[tab] = problemOf(err);
  }
}

async function refreshAll(): Promise<void> {
  await Promise.all([
    loadDevicePage(),
    load<{ pending: NodePendingView[]; paired: NodeView[] }>('nodes', 'node.pair.list', {}, (v) => {
      // Node-role device pairing requests also appear there; the Devices panel decides them.
      state.nodePending = v.pending.filter((p) => p.kind !== 'device-pairing');
      state.nodes = v.paired;
    }),
    load<{ codes: SetupView[] }>('setup', 'device.pair.setupStatus', {}, (v) => {
      state.setups = [...v.codes].reverse();
      state.loaded.setups = true;
    }),
    loadAudit(),
  ]);
  if (state.tabProblems.pending) state.tabProblems.devices = state.tabProblems.pending;
  else delete state.tabProblems.devices;
  render();
}

/** Devices per page of the devices view. */
const DEVICE_PAGE = 50;

/** The current page of devices (with the search typed), and the pending requests that come with it. */
async function loadDevicePage(): Promise<void> {
  const p = state.devicePages;
  const cursor = p.cursors[p.index];
  const search = p.search.trim();
  await load<{ pending: PendingView[]; paired: DeviceView[]; nextCursor?: string | null }>(
    'pending',
    'device.pair.list',
    { limit: DEVICE_PAGE, ...(cursor ? { cursor } : {}), ...(search ? { search } : {}) },
    (v) => {
      state.pending = v.pending;
      state.paired = v.paired;
      p.next = v.nextCursor ?? null;
      state.loaded.list = true;
    },
  );
}

/** Go to another page (or back to the first with a new search) and show it. */
async function showDevicePage(index: number): Promise<void> {
  state.devicePages.index = index;
  await loadDevicePage();
  render();
}

const AUDIT_PAGE = 5000;
const AUDIT_KEPT = 1000;

/**
 * The audit log only grows, and audit.list reads forwards from a sequence number: fetch what is
 * new since the last entry seen and keep the newest AUDIT_KEPT (newest first).
 */
async function loadAudit(): Promise<void> {
  const client = state.client;
  if (!client) return;
  try {
    for (;;) {
      const afterSeq = state.audit[0]?.seq ?? 0;
      const { entries } = await client.request<{ entries: AuditEntry[] }>('audit.list', { afterSeq, limit: AUDIT_PAGE });
      // Another refresh may have merged part of this page meanwhile: keep each seq once.
      const top = state.audit[0]?.seq ?? 0;
      const fresh = entries.filter((e) => e.seq > top).reverse();
      state.audit = [...fresh, ...state.audit].slice(0, AUDIT_KEPT);
      if (entries.length < AUDIT_PAGE) break;
    }
    state.loaded.audit = true;
    delete state.tabProblems.audit;
  } catch (err) {
    state.tabProblems.audit = problemOf(err);
  }
}

/** Events come in bursts (approve → resolved + changed): coalesce them into one refresh. */
function scheduleRefresh(): void {
  window.clearTimeout(state.refreshTimer);
  state.refreshTimer = window.setTimeout(() => void refreshAll(), 50);
}

/**
 * "Connected now" follows presence without a reload: a known device's status is set from the
 * event itself; a device not listed yet, a node (its card also shows the commands it declared)
 * or a truncated event needs the lists re-read.
 */
function onPresence(p: PresenceView): void {
  let reread = p.truncated;
  for (const c of p.changes) {
    const d = state.paired.find((x) => x.deviceId === c.deviceId);
    if (d) d.connected = c.deviceConnected;
    if (!d || c.role === 'node') reread = true;
  }
  render();
  if (reread) scheduleRefresh();
}

function onGatewayEvent(event: string, payload: unknown): void {
  if (event.startsWith('device.pair.') || event.startsWith('node.pair.') || event === 'tick') scheduleRefresh();
  else if (event === 'device.presence') onPresence(payload as PresenceView);
  else if (event === 'auth.updated' && state.hello) {
    const p = payload as { scopes?: string[] };
    if (p.scopes) state.hello.auth.scopes = p.scopes;
    render();
  } else if (event === 'shutdown') {
    state.connDetail = 'gateway is restarting';
    render();
  }
}

async function act(method: string, params: unknown, after?: (v: unknown) => void): Promise<void> {
  const client = state.client;
  if (!client) return report(new Error('not connected to the gateway'));
  state.confirm = null;
  try {
    const v = await client.request(method, params);
    after?.(v);
    await refreshAll();
  } catch (err) {
    report(err);
  }
}

// --- rendering ------------------------------------------------------------------------------

const CONN_LABELS: Record<ConnState, string> = {
  starting: 'starting…',
  'signed-out': 'signed out',
  connecting: 'connecting…',
  waiting: 'waiting for approval',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  unsupported: 'unsupported browser',
};

function renderHeader(): void {
  const chip = document.getElementById('conn-state');
  if (chip) {
    chip.textContent = CONN_LABELS[state.conn] + (state.connDetail ? ` — ${state.connDetail}` : '');
    chip.className = `chip conn-${state.conn}`;
    chip.setAttribute('data-state', state.conn);
  }
  const who = document.getElementById('who');
  if (who) {
    who.replaceChildren();
    if (state.hello && state.identity) {
      const limited = !state.hello.auth.scopes.includes('operator.admin');
      who.append(
        h('span', { class: 'muted', title: state.identity.deviceId }, `this browser: ${shortId(state.identity.deviceId)}`),
        h('button', { type: 'button', id: 'logout', onclick: () => void logout() }, 'Log out'),
      );
      if (limited) who.prepend(h('span', { class: 'chip warn', title: state.hello.auth.scopes.join(', ') }, 'limited access'));
    }
  }
}

function problemBox(p: Problem): HTMLElement {
  return h(
    'div',
    { class: 'problem', role: 'alert' },
    h('strong', {}, p.message),
    p.code ? h('code', { class: 'code' }, p.code) : null,
    p.nextStep ? h('div', { class: 'next' }, `Next step: ${p.nextStep}`) : null,
  );
}

function renderSignIn(): HTMLElement {
  const box = h('section', { class: 'signin' }, h('h2', {}, 'Sign in'));
  if (state.conn === 'waiting' && state.waiting) {
    box.append(
      h('p', {}, 'This browser asked to be paired. An operator must approve it (CLI: ', h('code', {}, 'clawgate devices approve'), ', or another Control UI).'),
      h(
        'p',
        {},
        'Confirmation code — check the approver sees the same: ',
        h('strong', { class: 'confirm-code', id: 'own-code' }, state.waiting.confirmationCode ?? '—'),
      ),
      h('p', { class: 'muted' }, `request ${state.waiting.requestId}`),
    );
    return box;
  }
  const input = h('input', {
    id: 'credential',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'owner credential (cgo_…) or gateway token',
    value: state.credentialDraft,
    oninput: (e) => {
      state.credentialDraft = (e.target as HTMLInputElement).value;
    },
  });
  const form = h(
    'form',
    {
      id: 'signin-form',
      onsubmit: (e) => {
        e.preventDefault();
        const value = state.credentialDraft.trim();
        if (!value) return report(new Error('paste the owner credential or the gateway token first'));
        void signIn(value);
      },
    },
    h('label', { for: 'credential' }, 'Owner credential or gateway token'),
    input,
    h('button', { type: 'submit', disabled: state.conn === 'connecting' }, 'Sign in'),
  );
  box.append(
    form,
    h(
      'p',
      { class: 'muted' },
      'The credential is used once and not stored: the gateway pairs this browser and gives this tab a device token (kept in session storage only). ',
      'An owner credential (cgo_…) is never sent: this page proves it to the gateway that served it. ',
      'On the gateway host, ',
      h('code', {}, 'clawgate dashboard'),
      ' prints a one-time sign-in link; ',
      h('code', {}, 'clawgate gateway token'),
      ' prints the gateway token.',
    ),
  );
  return box;
}

function tabButton(tab: Tab, label: string, count?: number): HTMLElement {
  return h(
    'button',
    {
      type: 'button',
      role: 'tab',
      id: `tab-${tab}`,
      class: state.tab === tab ? 'tab active' : 'tab',
      'aria-selected': state.tab === tab ? 'true' : 'false',
      onclick: () => {
        state.tab = tab;
        state.confirm = null;
        render();
      },
    },
    label,
    count ? h('span', { class: 'badge' }, String(count)) : null,
  );
}

/** A button that asks for confirmation in place before it acts. */
function confirmButton(key: string, label: string, confirmLabel: string, run: () => void): HTMLElement {
  if (state.confirm === key) {
    return h(
      'span',
      { class: 'confirm' },
      h('button', { type: 'button', class: 'danger', 'data-confirm': key, onclick: run }, confirmLabel),
      h(
        'button',
        {
          type: 'button',
          onclick: () => {
            state.confirm = null;
            render();
          },
        },
        'Cancel',
      ),
    );
  }
  return h(
    'button',
    {
      type: 'button',
      'data-action': key,
      onclick: () => {
        state.confirm = key;
        render();
      },
    },
    label,
  );
}

const KIND_LABELS: Record<string, string> = { 'new-device': 'new device', 'role-upgrade': 'role upgrade', 'scope-upgrade': 'scope upgrade' };

function scopeList(scopes: readonly string[], cls = 'scope'): HTMLElement {
  return h('span', { class: 'scopes' }, ...(scopes.length ? scopes.map((s) => h('span', { class: cls }, s)) : [h('span', { class: 'muted' }, 'none')]));
}

function renderPending(): HTMLElement {
  const panel = h('section', { id: 'panel-pending', class: 'panel' }, h('h2', {}, 'Pending requests'));
  if (state.tabProblems.pending) panel.append(problemBox(state.tabProblems.pending));
  if (state.tabProblems.nodes) panel.append(problemBox(state.tabProblems.nodes));
  if (state.loaded.list && state.pending.length === 0 && state.nodePending.length === 0)
    panel.append(h('p', { class: 'muted empty' }, 'No pending requests. New ones appear here as they arrive.'));
  for (const r of state.pending) {
    const what =
      r.kind === 'scope-upgrade'
        ? h('div', {}, 'adds ', scopeList(r.adds, 'scope add'), ' to ', scopeList(r.approvedScopes ?? []))
        : h('div', {}, `role ${r.role}`, r.scopes.length ? ' with ' : '', r.scopes.length ? scopeList(r.scopes) : null);
    const focused = state.focusRequestId === r.requestId;
    panel.append(
      h(
        'article',
        {
          class: focused ? 'card request focused' : 'card request',
          'data-request-id': r.requestId,
          'data-device-id': r.deviceId,
          'data-kind': r.kind,
          ...(focused ? { 'data-focused': 'true' } : {}),
        },
        h(
          'header',
          {},
          h('span', { class: `kind kind-${r.kind}` }, KIND_LABELS[r.kind] ?? r.kind),
          h('strong', {}, r.displayName ?? shortId(r.deviceId)),
          h('span', { class: 'confirm-code', title: 'Confirmation code: the requesting device shows the same digits' }, r.confirmationCode),
          quorumChip(r.approvals),
          h('span', { class: 'muted expiry', 'data-expires-at': String(r.expiresAtMs) }, `expires ${until(r.expiresAtMs)}`),
        ),
        what,
        requestFacts({
          client: [r.clientId, r.clientMode],
          platform: r.platform,
          remoteIp: r.remoteIp,
          createdAtMs: r.createdAtMs,
          lastSeen: timeEl(r.ts),
          idLabel: 'device',
          id: r.deviceId,
        }),
        requestActions('device.pair', r.requestId),
      ),
    );
  }
  for (const r of state.nodePending) panel.append(renderNodeRequest(r));
  return panel;
}

/** `approvals 1/2` on a request under quorum (nothing when one approval does it). */
function quorumChip(a: Approvals | undefined): HTMLElement | null {
  if (!a || a.required <= 1) return null;
  return h(
    'span',
    {
      class: 'chip quorum',
      'data-approvals': `${a.received}/${a.required}`,
      title: a.approvers.length ? `approved so far by ${a.approvers.join(', ')}` : 'no approvals yet: each approver counts once',
    },
    `approvals ${a.received}/${a.required}`,
  );
}

/** "in 3h" / "3h ago" for a time that may lie ahead. */
function until(ms: number): string {
  const s = Math.round((ms - Date.now()) / 1000);
  return s >= 0 ? `in ${fmtSpan(s)}` : `${fmtSpan(-s)} ago`;
}

function commandList(commands: readonly string[], host: readonly string[]): HTMLElement {
  if (commands.length === 0) return h('span', { class: 'muted' }, 'none');
  return h(
    'span',
    { class: 'commands' },
    ...commands.map((c) =>
      host.includes(c)
        ? h(
            'span',
            { class: 'command host', 'data-command': c, title: 'acts on the node’s host: approving it needs operator.admin' },
            c,
            h('span', { class: 'host-mark' }, 'host'),
          )
        : h('span', { class: 'command', 'data-command': c }, c),
    ),
  );
}

/** NODES-CORE: a node asking to have its command surface approved. */
function renderNodeRequest(r: NodePendingView): HTMLElement {
  const focused = state.focusRequestId === r.requestId;
  return h(
    'article',
    {
      class: focused ? 'card request focused' : 'card request',
      'data-request-id': r.requestId,
      'data-node-id': r.nodeId,
      'data-kind': 'node-surface',
      ...(focused ? { 'data-focused': 'true' } : {}),
    },
    h(
      'header',
      {},
      h('span', { class: 'kind kind-node-surface' }, 'node commands'),
      h('strong', {}, r.displayName ?? shortId(r.nodeId)),
      h(
        'span',
        { class: 'confirm-code', title: 'The node host prints this request id while it waits (“clawgate nodes approve <requestId>”)' },
        r.requestId.slice(0, 8),
      ),
      quorumChip(r.approvals),
    ),
    h('div', {}, 'commands ', commandList(r.commands, r.hostCommands)),
    h('div', { class: 'muted' }, `approving needs ${r.requiredApproveScopes.join(' + ')}`),
    requestFacts({
      client: [r.clientId, r.clientMode, r.version],
      platform: r.platform,
      remoteIp: r.remoteIp,
      createdAtMs: r.createdAtMs,
      lastSeen: r.connected ? 'connected now' : timeEl(r.ts),
      idLabel: 'node',
      id: r.nodeId,
    }),
    requestActions('node.pair', r.requestId),
  );
}

/** The facts a pending device or node request card lists (who asks, from where, since when). */
function requestFacts(f: {
  client: ReadonlyArray<string | null | undefined>;
  platform: string | null | undefined;
  remoteIp: string;
  createdAtMs: number;
  lastSeen: Child;
  idLabel: string;
  id: string;
}): HTMLElement {
  return h(
    'dl',
    {},
    h('dt', {}, 'client'),
    h('dd', {}, f.client.filter(Boolean).join(' / ') || '—'),
    h('dt', {}, 'platform'),
    h('dd', {}, f.platform ?? '—'),
    h('dt', {}, 'address'),
    h('dd', {}, f.remoteIp),
    h('dt', {}, 'first seen'),
    h('dd', {}, timeEl(f.createdAtMs)),
    h('dt', {}, 'last seen'),
    h('dd', {}, f.lastSeen),
    h('dt', {}, f.idLabel),
    h('dd', { title: f.id }, shortId(f.id)),
  );
}

/** How long a device approval lasts (`device.pair.approve` `ttl`); '' is until revoked. */
const TTL_CHOICES: ReadonlyArray<readonly [string, string]> = [
  ['', 'until revoked'],
  ['1h', 'for 1 hour'],
  ['8h', 'for 8 hours'],
  ['1d', 'for 1 day'],
  ['7d', 'for 7 days'],
];
/** The ttl picked on each request card, kept across re-renders (events redraw the lists). */
const ttlChoices = new Map<string, string>();

/** Approve / Reject buttons of a request card; `family` is `device.pair` or `node.pair`. */
function requestActions(family: 'device.pair' | 'node.pair', requestId: string): HTMLElement {
  const picked = ttlChoices.get(requestId) ?? '';
  // A device approval may be time-bound: its scopes (or the role) are withdrawn live when it ends.
  const ttl =
    family === 'device.pair'
      ? h(
          'select',
          {
            class: 'ttl',
            'data-field': 'ttl',
            'aria-label': 'How long the approval lasts',
            onchange: (e) => ttlChoices.set(requestId, (e.target as HTMLSelectElement).value),
          },
          ...TTL_CHOICES.map(([value, label]) => h('option', { value, ...(value === picked ? { selected: true } : {}) }, label)),
        )
      : null;
  const approve = () => {
    const chosen = ttlChoices.get(requestId) ?? '';
    ttlChoices.delete(requestId);
    void act(`${family}.approve`, { requestId, ...(chosen ? { ttl: chosen } : {}) });
  };
  return h(
    'div',
    { class: 'actions' },
    ttl,
    h('button', { type: 'button', class: 'primary', 'data-action': 'approve', onclick: approve }, 'Approve'),
    h('button', { type: 'button', 'data-action': 'reject', onclick: () => void act(`${family}.reject`, { requestId }) }, 'Reject'),
  );
}

function renderDevice(d: DeviceView): HTMLElement {
  const self = state.identity?.deviceId === d.deviceId;
  const name = d.label ?? d.displayName ?? shortId(d.deviceId);
  const renaming = state.renaming?.deviceId === d.deviceId ? state.renaming : null;
  const title = renaming
    ? h(
        'form',
        {
          class: 'rename',
          onsubmit: (e) => {
            e.preventDefault();
            const label = renaming.draft.trim();
            state.renaming = null;
            void act('device.pair.rename', { deviceId: d.deviceId, label });
          },
        },
        h('input', {
          id: `rename-${d.deviceId}`,
          value: renaming.draft,
          maxlength: '64',
          oninput: (e) => {
            renaming.draft = (e.target as HTMLInputElement).value;
          },
        }),
        h('button', { type: 'submit' }, 'Save'),
        h(
          'button',
          {
            type: 'button',
            onclick: () => {
              state.renaming = null;
              render();
            },
          },
          'Cancel',
        ),
      )
    : h('strong', {}, name);
  const grants = d.grants.map((g) => {
    const token = d.tokens.find((t) => t.role === g.role && t.revokedAtMs === undefined);
    return h(
      'div',
      { class: 'grant', 'data-role': g.role },
      h('span', { class: `role role-${g.role}` }, g.role),
      scopeList(g.scopes),
      h('span', { class: 'muted' }, ` approved ${ago(g.approvedAtMs)} (${g.approvedBy ?? g.approvedVia})`),
      typeof g.expiresAtMs === 'number'
        ? h('span', { class: 'chip warn expiry', 'data-expires-at': String(g.expiresAtMs) }, `expires ${until(g.expiresAtMs)}`)
        : null,
      h('span', { class: 'token' }, token ? `token ${token.tokenId}` : 'no live token'),
      h(
        'span',
        { class: 'actions' },
        confirmButton(
          `rotate:${d.deviceId}:${g.role}`,
          `Rotate ${g.role} token`,
          `Confirm rotate ${g.role}`,
          () =>
            void act('device.token.rotate', { deviceId: d.deviceId, role: g.role }, (v) => {
              const token = (v as { token?: string }).token;
              if (self && token) {
                void keepTabToken(token, state.hello?.auth.scopes ?? []);
              }
            }),
        ),
        confirmButton(
          `revoke:${d.deviceId}:${g.role}`,
          `Revoke ${g.role}`,
          `Confirm revoke ${g.role}`,
          () => void act('device.token.revoke', { deviceId: d.deviceId, role: g.role }),
        ),
      ),
    );
  });
  return h(
    'article',
    { class: 'card device', 'data-device-id': d.deviceId },
    h(
      'header',
      {},
      title,
      self ? h('span', { class: 'chip' }, 'this browser') : null,
      h(
        'span',
        { class: d.connected ? 'chip online' : 'chip offline', 'data-connected': d.connected ? 'true' : 'false' },
        d.connected ? 'connected now' : 'offline',
      ),
    ),
    ...grants,
    d.grants.length === 0 ? h('div', { class: 'muted' }, 'no role granted') : null,
    nodeSection(d.deviceId),
    explainSection(d.deviceId),
    h(
      'dl',
      {},
      h('dt', {}, 'device'),
      h('dd', { title: d.deviceId }, shortId(d.deviceId)),
      h('dt', {}, 'client'),
      h('dd', {}, [d.clientId, d.clientMode].filter(Boolean).join(' / ') || '—'),
      h('dt', {}, 'platform'),
      h('dd', {}, d.platform ?? '—'),
      h('dt', {}, 'last seen'),
      h('dd', {}, d.connected ? 'now' : timeEl(d.lastSeenAtMs), d.remoteIp ? ` from ${d.remoteIp}` : ''),
      h('dt', {}, 'paired'),
      h('dd', {}, timeEl(d.createdAtMs)),
      h('dt', {}, 'tokens'),
      h(
        'dd',
        {},
        d.tokens.length === 0
          ? '—'
          : d.tokens
              .map((t) => `${t.tokenId} (${t.role}${t.revokedAtMs !== undefined ? ', revoked' : t.rotatedAtMs !== undefined ? ', rotated' : ''})`)
              .join(', '),
      ),
    ),
    h(
      'div',
      { class: 'actions' },
      renaming
        ? null
        : h(
            'button',
            {
              type: 'button',
              'data-action': 'rename',
              onclick: () => {
                state.renaming = { deviceId: d.deviceId, draft: d.label ?? d.displayName ?? '' };
                render();
                document.getElementById(`rename-${d.deviceId}`)?.focus();
              },
            },
            'Rename',
          ),
      confirmButton(`remove:${d.deviceId}`, 'Remove', 'Confirm remove', () => void act('device.pair.remove', { deviceId: d.deviceId })),
    ),
  );
}

/** Explain on a device card: what it holds and why, and whether a method would pass (device.explain). */
function explainSection(deviceId: string): HTMLElement {
  const got = state.explain[deviceId];
  const form = h(
    'form',
    {
      class: 'explain-form',
      onsubmit: (e) => {
        e.preventDefault();
        void explainDevice(deviceId);
      },
    },
    h('input', {
      id: `explain-method-${deviceId}`,
      placeholder: 'method (optional), e.g. device.pair.list',
      value: state.explainMethod[deviceId] ?? '',
      maxlength: '128',
      oninput: (e) => {
        state.explainMethod[deviceId] = (e.target as HTMLInputElement).value;
      },
    }),
    h('button', { type: 'submit', 'data-action': 'explain' }, 'Explain'),
  );
  const body: Child[] = [];
  if (got === 'loading') body.push(h('p', { class: 'muted' }, 'asking the gateway…'));
  else if (got && 'message' in got) body.push(problemBox(got));
  else if (got) {
    for (const r of got.roles) {
      body.push(
        h(
          'div',
          { class: 'explain-role', 'data-role': r.role },
          `${r.role}: `,
          scopeList(r.scopes),
          ` since ${when(r.sinceMs)} (${r.approvedBy ?? r.approvedVia})`,
          r.expiresAtMs !== null ? `, expires ${until(r.expiresAtMs)}` : ', no expiry',
        ),
      );
    }
    for (const p of got.pending) {
      body.push(
        h(
          'div',
          { class: 'explain-pending', 'data-request-id': p.requestId },
          `pending ${p.type} request adds `,
          scopeList(p.adds, 'scope add'),
          ' ',
          quorumChip(p.approvals),
          h('div', { class: 'muted' }, `needs ${p.needs}: `, h('code', {}, p.command)),
        ),
      );
    }
    if (got.call) {
      const c = got.call;
      body.push(
        h(
          'div',
          { class: c.allowed ? 'explain-call allowed' : 'explain-call refused', 'data-allowed': c.allowed ? 'true' : 'false' },
          c.allowed ? `${c.method}: allowed` : `${c.method}: refused (${c.code}); missing ${c.missing ?? ''}`,
          c.fix ? h('div', {}, 'fix: ', h('code', {}, c.fix)) : null,
        ),
      );
    }
  }
  return h('div', { class: 'explain', 'data-explain': deviceId }, form, ...body);
}

/** NODES-CORE: the approved and declared commands of a node. */
function nodeSection(deviceId: string): HTMLElement | null {
  const n = state.nodes.find((x) => x.nodeId === deviceId);
  if (!n) return null;
  return h(
    'dl',
    { class: 'node-commands' },
    h('dt', {}, 'approved commands'),
    h('dd', { class: 'approved' }, commandList(n.approvedCommands, n.hostCommands)),
    h('dt', {}, 'declared commands'),
    h(
      'dd',
      { class: 'declared' },
      n.declaredCommands ? commandList(n.declaredCommands, n.hostCommands) : h('span', { class: 'muted' }, 'offline (declared on connect)'),
    ),
    n.pendingCommands.length ? h('dt', {}, 'awaiting approval') : null,
    n.pendingCommands.length ? h('dd', {}, commandList(n.pendingCommands, n.hostCommands)) : null,
  );
}

function renderDevices(): HTMLElement {
  const panel = h('section', { id: 'panel-devices', class: 'panel' }, h('h2', {}, 'Devices and nodes'));
  if (state.tabProblems.devices) panel.append(problemBox(state.tabProblems.devices));
  const nodes = state.paired.filter((d) => d.roles.includes('node'));
  const operators = state.paired.filter((d) => !d.roles.includes('node'));
  const p = state.devicePages;
  panel.append(
    h(
      'form',
      { class: 'inline', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'device-search' }, 'Search'),
      h('input', {
        id: 'device-search',
        value: p.search,
        maxlength: '64',
        placeholder: 'name or id starts with…',
        oninput: (e) => {
          p.search = (e.target as HTMLInputElement).value;
          // A new search starts again at its first page, once the typing pauses.
          window.clearTimeout(p.timer);
          p.timer = window.setTimeout(() => {
            p.cursors = [undefined];
            void showDevicePage(0);
          }, 200);
        },
      }),
    ),
  );
  if (state.loaded.list && state.paired.length === 0) {
    panel.append(
      h('p', { class: 'muted empty' }, p.search.trim() ? 'No device matches this search.' : p.index > 0 ? 'No more devices.' : 'No paired devices yet.'),
    );
  }
  if (operators.length) panel.append(h('h3', {}, 'Operator devices'), ...operators.map(renderDevice));
  if (nodes.length) panel.append(h('h3', {}, 'Nodes'), ...nodes.map(renderDevice));
  if (p.index > 0 || p.next) {
    panel.append(
      h(
        'nav',
        { class: 'pager', 'aria-label': 'device pages' },
        h('button', { type: 'button', id: 'devices-prev', disabled: p.index === 0, onclick: () => void showDevicePage(p.index - 1) }, 'Previous'),
        h('span', { id: 'devices-page', class: 'muted' }, ` page ${p.index + 1} `),
        h(
          'button',
          {
            type: 'button',
            id: 'devices-next',
            disabled: !p.next,
            onclick: () => {
              if (!p.next) return;
              p.cursors = [...p.cursors.slice(0, p.index + 1), p.next];
              void showDevicePage(p.index + 1);
            },
          },
          'Next',
        ),
      ),
    );
  }
  return panel;
}

function qrSvg(text: string): SVGSVGElement {
  const qr = encodeQr(text);
  const n = qr.size + 8;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${n} ${n}`);
  svg.setAttribute('class', 'qr');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'QR code of the setup link');
  svg.setAttribute('shape-rendering', 'crispEdges');
  const bg = document.createElementNS(ns, 'rect');
  bg.setAttribute('width', String(n));
  bg.setAttribute('height', String(n));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', qrPath(qr));
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}

function renderSetup(): HTMLElement {
  const panel = h('section', { id: 'panel-setup', class: 'panel' }, h('h2', {}, 'Setup codes'));
  const f = state.mintForm;
  panel.append(
    h(
      'form',
      {
        id: 'mint-form',
        class: 'inline',
        onsubmit: (e) => {
          e.preventDefault();
          const params: Record<string, unknown> = { profile: f.profile, ttlMs: Number(f.ttl) };
          if (f.label.trim()) params.label = f.label.trim();
          void act('device.pair.setupCode', params, (v) => {
            state.minted = v as MintResult;
            f.label = '';
          });
        },
      },
      h('label', { for: 'mint-profile' }, 'Profile'),
      h(
        'select',
        {
          id: 'mint-profile',
          onchange: (e) => {
            f.profile = (e.target as HTMLSelectElement).value;
          },
        },
        ...['operator', 'node', 'operator+node'].map((p) => h('option', { value: p, selected: f.profile === p }, p)),
      ),
      h('label', { for: 'mint-label' }, 'Label'),
      h('input', {
        id: 'mint-label',
        maxlength: '64',
        placeholder: 'e.g. Anna’s phone',
        value: f.label,
        oninput: (e) => {
          f.label = (e.target as HTMLInputElement).value;
        },
      }),
      h('label', { for: 'mint-ttl' }, 'Valid for'),
      h(
        'select',
        {
          id: 'mint-ttl',
          onchange: (e) => {
            f.ttl = (e.target as HTMLSelectElement).value;
          },
        },
        ...[
          ['300000', '5 minutes'],
          ['600000', '10 minutes'],
          ['3600000', '1 hour'],
        ].map(([v, l]) => h('option', { value: v, selected: f.ttl === v }, l as string)),
      ),
      h('button', { type: 'submit', class: 'primary', id: 'mint' }, 'Mint setup code'),
    ),
  );
  if (state.tabProblems.setup) panel.append(problemBox(state.tabProblems.setup));
  const m = state.minted;
  if (m) {
    panel.append(
      h(
        'article',
        { class: 'card minted', id: 'minted', 'data-setup-id': m.setupId },
        h(
          'header',
          {},
          h('strong', {}, `Setup code ${m.label ? `“${m.label}” ` : ''}(${m.profile})`),
          h('span', { class: 'muted' }, `expires ${ago(m.expiresAtMs)}`),
        ),
        h('div', { class: 'qr-box' }, qrSvg(m.link)),
        h('label', { for: 'minted-link' }, 'Link'),
        h('input', { id: 'minted-link', readonly: true, value: m.link }),
        h('label', { for: 'minted-code' }, 'Code'),
        h('input', { id: 'minted-code', readonly: true, value: m.setupCode }),
        h('p', { class: 'muted' }, 'Scan or paste it on the new device; it pairs one device and is shown only now.'),
      ),
    );
  }
  const rows = state.setups.map((c) =>
    h(
      'tr',
      { 'data-setup-id': c.setupId, 'data-status': c.status },
      h('td', {}, h('code', {}, c.setupId)),
      h('td', {}, c.label ?? '—'),
      h('td', {}, c.profile),
      h('td', { class: `status status-${c.status}` }, c.status),
      h('td', {}, timeEl(c.createdAtMs)),
      h('td', {}, c.status === 'active' ? timeEl(c.expiresAtMs) : '—'),
      h('td', {}, c.deviceId ? `${c.deviceName ?? shortId(c.deviceId)} ${ago(c.redeemedAtMs)}` : '—'),
      h(
        'td',
        {},
        c.status === 'active'
          ? confirmButton(`setup-revoke:${c.setupId}`, 'Revoke', 'Confirm revoke', () => void act('device.pair.setupRevoke', { setupId: c.setupId }))
          : null,
      ),
    ),
  );
  panel.append(
    state.setups.length === 0 && state.loaded.setups
      ? h('p', { class: 'muted empty' }, 'No setup codes minted yet.')
      : h(
          'table',
          { id: 'setup-table' },
          h('thead', {}, h('tr', {}, ...['id', 'label', 'profile', 'state', 'minted', 'expires', 'redeemed by', ''].map((t) => h('th', {}, t)))),
          h('tbody', {}, ...rows),
        ),
  );
  return panel;
}

function renderAudit(): HTMLElement {
  const panel = h('section', { id: 'panel-audit', class: 'panel' }, h('h2', {}, 'Audit log'));
  const f = state.auditFilter;
  const actions = [...new Set(state.audit.map((e) => e.action))].sort();
  const input = (key: 'actor' | 'subject', label: string) => [
    h('label', { for: `audit-${key}` }, label),
    h('input', {
      id: `audit-${key}`,
      value: f[key],
      placeholder: 'contains…',
      oninput: (e) => {
        f[key] = (e.target as HTMLInputElement).value;
        render();
      },
    }),
  ];
  panel.append(
    h(
      'form',
      { class: 'inline', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'audit-action' }, 'Action'),
      h(
        'select',
        {
          id: 'audit-action',
          onchange: (e) => {
            f.action = (e.target as HTMLSelectElement).value;
            render();
          },
        },
        h('option', { value: '' }, 'all'),
        ...actions.map((a) => h('option', { value: a, selected: f.action === a }, a)),
      ),
      ...input('actor', 'Actor'),
      ...input('subject', 'Subject'),
    ),
  );
  if (state.tabProblems.audit) panel.append(problemBox(state.tabProblems.audit));
  const shown = state.audit.filter(
    (e) =>
      (!f.action || e.action === f.action) &&
      (!f.actor || e.actor.toLowerCase().includes(f.actor.toLowerCase())) &&
      (!f.subject || (e.subject ?? '').toLowerCase().includes(f.subject.toLowerCase())),
  );
  panel.append(
    h('p', { class: 'muted' }, `${shown.length} of ${state.audit.length} entries (newest first)`),
    h(
      'table',
      { id: 'audit-table' },
      h('thead', {}, h('tr', {}, ...['#', 'when', 'actor', 'action', 'subject', 'data'].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        ...shown
          .slice(0, 500)
          .map((e) =>
            h(
              'tr',
              { 'data-action': e.action },
              h('td', {}, String(e.seq)),
              h('td', {}, timeEl(e.atMs)),
              h('td', {}, e.actor.length > 24 ? `${e.actor.slice(0, 24)}…` : e.actor),
              h('td', {}, e.action),
              h('td', { title: e.subject ?? '' }, e.subject ? (e.subject.length > 16 ? shortId(e.subject) : e.subject) : '—'),
              h('td', { class: 'data' }, e.data ? JSON.stringify(e.data) : ''),
            ),
          ),
      ),
    ),
  );
  return panel;
}

function render(): void {
  renderHeader();
  const root = document.getElementById('app');
  if (!root) return;
  // Re-rendering replaces the nodes: keep the focused field and its caret.
  const active = document.activeElement as HTMLInputElement | null;
  const focusId = active?.id;
  const caret = active && typeof active.selectionStart === 'number' ? ([active.selectionStart, active.selectionEnd ?? active.selectionStart] as const) : null;
  const children: Node[] = [];
  if (state.problems.length) {
    children.push(
      h(
        'div',
        { class: 'problems', id: 'problems' },
        ...state.problems.map(problemBox),
        h(
          'button',
          {
            type: 'button',
            class: 'link',
            onclick: () => {
              state.problems = [];
              render();
            },
          },
          'Dismiss',
        ),
      ),
    );
  }
  if (state.notice && (state.hello || state.requestLink)) children.push(h('p', { class: 'notice', id: 'notice' }, state.notice));
  if (state.conn === 'starting') children.push(h('p', { class: 'muted' }, 'Loading…'));
  else if (state.conn === 'unsupported') {
    /* the problem box says why */
  } else if (!state.hello) children.push(renderSignIn());
  else {
    children.push(
      h(
        'nav',
        { role: 'tablist' },
        tabButton('pending', 'Pending', state.pending.length + state.nodePending.length),
        tabButton('devices', 'Devices & nodes', state.paired.length),
        tabButton('setup', 'Setup codes'),
        tabButton('audit', 'Audit log'),
      ),
    );
    children.push(
      state.tab === 'pending' ? renderPending() : state.tab === 'devices' ? renderDevices() : state.tab === 'setup' ? renderSetup() : renderAudit(),
    );
  }
  root.replaceChildren(...children);
  if (focusId) {
    const el = document.getElementById(focusId) as HTMLInputElement | null;
    if (el && el !== document.activeElement) {
      el.focus();
      if (caret && typeof el.setSelectionRange === 'function') {
        try {
          el.setSelectionRange(caret[0], caret[1]);
        } catch {
          // not a text field
        }
      }
    }
  }
}

async function start(): Promise<void> {
  // Read and strip a one-time sign-in link first, before anything else can see the address.
  const params = new URLSearchParams(location.hash.slice(1));
  const link = params.get('login');
  // A notification's link: kept in memory only, redeemed after sign-in.
  state.requestLink = params.get('request');
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  render();
  const unsupported = unsupportedReason();
  if (unsupported) {
    state.problems = [unsupported];
    setConn('unsupported');
    return;
  }
  try {
    const record = await ensureRecord(store, platform, target.url, Date.now());
    const key = await platform.crypto.restore(record.identity);
    state.identity = { deviceId: key.deviceId, publicKey: key.publicKey };
  } catch (err) {
    state.problems = [
      {
        message: `This browser cannot make or use an Ed25519 device key with WebCrypto (${(err as Error).name}: ${(err as Error).message}).`,
        nextStep:
          'Use a browser with WebCrypto Ed25519 (Chrome/Edge 137+, Firefox 129+, Safari 17+) and site storage allowed, or manage devices with the clawgate CLI.',
      },
    ];
    setConn('unsupported');
    return;
  }
  if (link) return signIn(link);
  if (state.requestLink) state.notice = 'Sign in to open the request from the notification link.';
  if (store.tabToken(target.key)) {
    setConn('connecting', 'resuming with this tab’s device token');
    startClient();
    return;
  }
  setConn('signed-out');
}

/** Why this page cannot hold a device key at all, or null. */
function unsupportedReason(): Problem | null {
  if (!window.isSecureContext || !globalThis.crypto?.subtle) {
    return {
      message: 'This page is not a secure context, so the browser offers no WebCrypto to hold a device key.',
      nextStep:
        'Open the Control UI over https (through a TLS proxy, or the gateway’s --tls), or on the gateway host at http://127.0.0.1:<port>/ or http://localhost:<port>/.',
    };
  }
  if (typeof indexedDB === 'undefined')
    return { message: 'This browser has no IndexedDB to keep the device key in.', nextStep: 'Use a current browser outside private mode.' };
  return null;
}

void start();

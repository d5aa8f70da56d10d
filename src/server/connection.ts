/**
 * One WebSocket connection of the gateway, from the challenge to the close. The per-socket state
 * lives in fields of the socket object itself (`GatewaySocket`, the class `ws` builds for every
 * accepted socket), which handles its own events (no listener per socket): an idle
 * authenticated socket costs its `ws` objects, its session and a handful of fields, not a dozen
 * closures, their contexts and a timer object per deadline. The socket is also its own entry in
 * the timer wheel (handshake deadline, then keep-alive pings).
 */

import type { Socket } from 'node:net';
import { CLOSE, closeReason, GatewayError } from '@clawgate/protocol/errors';
import { WebSocket } from 'ws';
import type { ConnectOutcome, Gateway, TransportFacts } from '../core/gateway.js';
import { frameCapBytes, type SessionPrincipal, type SessionTransport } from '../core/principal.js';
import { quietReceiverEnd, quietSocketEnd } from './quiet-end.js';
import type { TimerWheel, WheelEntry, WheelLink } from './timer-wheel.js';

// A closing socket's repeated end() calls build no thrown-away errors (quiet-end.ts).
quietReceiverEnd();

/** What every connection of one server shares (one object per server, not per socket). */
export interface ConnectionContext {
  gateway: Gateway;
  wheel: TimerWheel;
  /** Open sockets, for the graceful stop. */
  sockets: SocketList;
  handshakeTimeoutMs: number;
  pingIntervalMs: number;
}

/** Where a connection is (small integers: a field of every socket). */
const State = { Handshake: 0, Authenticating: 1, Waiting: 2, Open: 3, Closed: 4 } as const;
type State = (typeof State)[keyof typeof State];

/**
 * The open sockets of a server, linked through the sockets themselves (two fields each) rather
 * than held in a Set, whose table would cost more per socket and be copied as it grows.
 */
export class SocketList implements Iterable<GatewaySocket> {
  private head: GatewaySocket | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  private has(ws: GatewaySocket): boolean {
    return ws.listPrev !== null || this.head === ws;
  }

  add(ws: GatewaySocket): void {
    if (this.has(ws)) return;
    ws.listNext = this.head;
    if (this.head) this.head.listPrev = ws;
    this.head = ws;
    this.count++;
  }

  delete(ws: GatewaySocket): void {
    if (!this.has(ws)) return;
    if (ws.listPrev) ws.listPrev.listNext = ws.listNext;
    else this.head = ws.listNext;
    if (ws.listNext) ws.listNext.listPrev = ws.listPrev;
    ws.listPrev = null;
    ws.listNext = null;
    this.count--;
  }

  /** A snapshot: closing the sockets it yields (which unlists them) does not disturb it. */
  [Symbol.iterator](): Iterator<GatewaySocket> {
    const out: GatewaySocket[] = [];
    for (let ws = this.head; ws; ws = ws.listNext) out.push(ws);
    return out[Symbol.iterator]();
  }
}

/** The transport side of a session as the core sees it (core never holds the socket itself). */
class SocketTransport implements SessionTransport {
  constructor(private readonly ws: GatewaySocket) {}
  send(text: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }
  close(code: number, reason: string): void {
    const ws = this.ws;
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code, closeReason(reason));
  }
  bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }
  setFrameCap(maxBytes: number): void {
    setFrameCap(this.ws, maxBytes);
  }
}

/** Set the inbound frame cap of one socket (ws keeps it per receiver; it starts at the pre-auth cap). */
export function setFrameCap(ws: WebSocket, maxBytes: number): void {
  const receiver = (ws as unknown as { _receiver?: { _maxPayload?: number } })._receiver;
  if (receiver && typeof receiver._maxPayload === 'number') receiver._maxPayload = maxBytes;
}

/**
 * The socket class of the gateway's WebSocketServer (`ws` option `WebSocket`): a `ws` socket
 * plus the connection's state. Fields are set by `serveConnection` right after the upgrade.
 */
export class GatewaySocket extends WebSocket implements WheelEntry {
  conn: ConnectionContext | null = null;
  /** Until the socket is admitted (the session then carries the address and connection id). */
  facts: TransportFacts | null = null;
  /** The challenge nonce, until the first frame has been handed to the handshake. */
  nonce = '';
  state: State = State.Handshake;
  session: SessionPrincipal | null = null;
  cancelWait: (() => void) | null = null;
  /** Created with the first request frame: an idle socket holds no map. */
  inflight: Map<string, AbortController> | null = null;
  transport: SocketTransport | null = null;
  /** The peer answered the last ping (or none was sent yet). */
  alive = true;
  // Deadlines are whole milliseconds of the wheel's clock (small integers, stored in the object).
  /** Wheel clock (ms) of the handshake deadline; 0 once the handshake is over. */
  handshakeDueMs = 0;
  /** Wheel clock (ms) of the next keep-alive ping. */
  pingDueMs = 0;
  /** Links of the server's SocketList. */
  listPrev: GatewaySocket | null = null;
  listNext: GatewaySocket | null = null;
  wheelAtMs = 0;
  wheelPrev: WheelLink | null = null;
  wheelNext: WheelLink | null = null;

  /**
   * The connection's own events are handled here rather than by listeners: a listener per event
   * would give every socket an event table of four entries (a quarter KiB per idle socket).
   * Listeners added by anyone else still hear every event.
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    switch (event) {
      case 'message':
        onSocketMessage(this, args[0] as Buffer, args[1] as boolean);
        break;
      case 'pong':
        this.alive = true;
        break;
      case 'close':
        onSocketClose(this);
        break;
      case 'error':
        onSocketError(this, args[0] as Error);
        // Handled: an 'error' without listeners must not throw (EventEmitter's default).
        if (this.listenerCount('error') === 0) return true;
        break;
    }
    return super.emit(event, ...args);
  }

  /**
   * Every close (the peer's close frame answered, or one of ours) passes here before the TCP
   * socket ends: from now on its repeated end() calls are quiet (quiet-end.ts).
   */
  override close(code?: number, data?: string | Buffer): void {
    const socket = (this as unknown as { _socket?: Socket | null })._socket;
    if (socket) quietSocketEnd(socket);
    super.close(code, data);
  }

  /** The wheel woke this socket: handshake deadline, ping, or both. */
  onWheel(): void {
    const conn = this.conn as ConnectionContext;
    const now = conn.wheel.now();
    if (this.handshakeDueMs !== 0 && now >= this.handshakeDueMs) {
      this.handshakeDueMs = 0;
      // Covers the first frame and the authentication it starts (a hung store must not hold the
      // socket forever). A connect waiting for approval has its own, longer lifetime.
      if (this.state === State.Handshake || this.state === State.Authenticating) {
        // Closed from here on: an answer that still arrives is dropped, a late session disconnected.
        this.state = State.Closed;
        const e = new GatewayError('HANDSHAKE_TIMEOUT');
        this.transport?.close(e.close ?? CLOSE.policy, e.shape.message);
      }
    }
    if (now >= this.pingDueMs) {
      if (!this.alive) {
        this.terminate();
        return;
      }
      this.alive = false;
      if (this.readyState === WebSocket.OPEN) this.ping();
      this.pingDueMs = now + conn.pingIntervalMs;
    }
    this.rearm();
  }

  /** Arm the wheel for the earlier of the pending handshake deadline and the next ping. */
  rearm(): void {
    const conn = this.conn as ConnectionContext;
    const due = this.handshakeDueMs !== 0 && this.handshakeDueMs < this.pingDueMs ? this.handshakeDueMs : this.pingDueMs;
    conn.wheel.armAt(this, due);
  }

  finish(outcome: ConnectOutcome): void {
    const conn = this.conn as ConnectionContext;
    const gateway = conn.gateway;
    const facts = this.facts as TransportFacts;
    if (this.state === State.Closed) {
      // The socket is gone (closed by the client, or by the handshake timeout mid-authentication).
      if (outcome.type === 'hello') gateway.disconnect(outcome.session);
      else if (outcome.type === 'wait') outcome.cancel();
      return;
    }
    if (outcome.type === 'hello') {
      this.handshakeDueMs = 0;
      this.session = outcome.session;
      this.state = State.Open;
      // The session carries the address and connection id from here on.
      this.facts = null;
      setFrameCap(this, frameCapBytes(outcome.session));
      this.send(outcome.frame);
      gateway.log.info('session opened', {
        connId: facts.connId,
        role: outcome.session.role,
        kind: outcome.session.kind,
        deviceId: outcome.session.deviceId,
        authMethod: outcome.authMethod,
        address: facts.address,
      });
    } else if (outcome.type === 'reject') {
      this.state = State.Closed;
      gateway.log.info('connect refused', { connId: facts.connId, code: outcome.detail ?? null, closeCode: outcome.closeCode, address: facts.address });
      if (outcome.frame) this.send(outcome.frame);
      this.transport?.close(outcome.closeCode, outcome.closeReason);
    } else {
      this.state = State.Waiting;
      this.handshakeDueMs = 0;
      this.cancelWait = outcome.cancel;
      gateway.log.info('connect waiting for approval', { connId: facts.connId, requestId: outcome.requestId, address: facts.address });
      this.transport?.send(
        JSON.stringify({ type: 'event', event: 'device.pair.waiting', payload: { requestId: outcome.requestId, confirmationCode: outcome.confirmationCode } }),
      );
      outcome.result.then(
        (o) => this.finish(o),
        (err) => {
          gateway.log.error('approval wait failed', { connId: facts.connId, err: String(err) });
          this.transport?.close(CLOSE.tryAgainLater, 'internal error');
        },
      );
    }
  }

  /** Connection id and address for a log line, whichever of facts and session holds them now. */
  who(): { connId: string | undefined; address: string | undefined } {
    return { connId: this.facts?.connId ?? this.session?.connId, address: this.facts?.address ?? this.session?.address };
  }
}

/**
 * Start serving an accepted socket: challenge (signed by the gateway key when the client asked
 * for the gateway's proof), handshake deadline, pings, frames.
 */
export function serveConnection(conn: ConnectionContext, ws: GatewaySocket, facts: TransportFacts, signedChallenge: boolean): void {
  const challenge = conn.gateway.challenge(signedChallenge);
  ws.conn = conn;
  ws.facts = facts;
  // Only the nonce outlives the challenge frame (the signed payload is not kept per socket).
  ws.nonce = challenge.nonce;
  ws.transport = new SocketTransport(ws);
  conn.sockets.add(ws);
  const now = conn.wheel.now();
  ws.handshakeDueMs = now + conn.handshakeTimeoutMs;
  ws.pingDueMs = now + conn.pingIntervalMs;
  ws.rearm();
  ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: challenge }));
}

// What the socket's events do (called from GatewaySocket.emit; shared by every socket).

function onSocketError(ws: GatewaySocket, err: Error): void {
  const { connId, address } = ws.who();
  ws.conn?.gateway.log.warn('socket error', { connId, address, err: String(err) });
}

function onSocketClose(ws: GatewaySocket): void {
  const conn = ws.conn as ConnectionContext;
  conn.sockets.delete(ws);
  ws.state = State.Closed;
  ws.handshakeDueMs = 0;
  conn.wheel.disarm(ws);
  ws.cancelWait?.();
  ws.cancelWait = null;
  if (ws.inflight) for (const ac of ws.inflight.values()) ac.abort();
  const session = ws.session;
  if (session) {
    conn.gateway.log.info('session closed', { connId: session.connId, role: session.role, deviceId: session.deviceId });
    conn.gateway.disconnect(session);
  }
}

function onSocketMessage(ws: GatewaySocket, data: Buffer, isBinary: boolean): void {
  const conn = ws.conn as ConnectionContext;
  const gateway = conn.gateway;
  const transport = ws.transport as SocketTransport;
  if (ws.state === State.Handshake) {
    if (isBinary) {
      ws.state = State.Closed;
      const e = new GatewayError('INVALID_FRAME');
      transport.close(e.close ?? CLOSE.policy, e.shape.message);
      return;
    }
    ws.state = State.Authenticating;
    const nonce = ws.nonce;
    ws.nonce = '';
    const facts = ws.facts as TransportFacts;
    gateway.connect(data.toString('utf8'), nonce, facts, transport).then(
      (outcome) => ws.finish(outcome),
      (err) => {
        gateway.log.error('connect crashed', { connId: facts.connId, err: String(err) });
        transport.close(CLOSE.tryAgainLater, 'internal error');
      },
    );
    return;
  }
  const s = ws.session;
  if (ws.state !== State.Open || !s) return; // frames while authenticating or waiting are ignored
  if (isBinary) {
    transport.send(JSON.stringify({ type: 'res', id: '', ok: false, error: new GatewayError('INVALID_FRAME').shape }));
    return;
  }
  ws.inflight ??= new Map();
  gateway.frame(s, data.toString('utf8'), ws.inflight).then(
    (reply) => {
      if (reply !== null) transport.send(reply);
    },
    (err) => gateway.log.error('frame handling crashed', { connId: s.connId, err: String(err) }),
  );
}

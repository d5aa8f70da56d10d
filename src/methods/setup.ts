/**
 * Setup-code management (PROTOCOL.md §Setup codes), for operator.admin and the owner only, and
 * not advertised in `hello-ok.features.methods` (as in the reference):
 * - device.pair.setupCode   mint a code (the reference's params are accepted too);
 * - device.pair.setupStatus list every code, or one code with its completion;
 * - device.pair.setupRevoke revoke a code that was not used yet (or end its repeat window).
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN } from '@clawgate/protocol/scopes';
import { decodeSetupCode, MAX_SETUP_URLS, setupUrlProblem } from '@clawgate/protocol/setup-code';
import { unsafeFieldError } from '@clawgate/protocol/text';
import type { SetupMintView } from '@clawgate/protocol/views';
import { Type as T } from '@sinclair/typebox';
import { toWsUrl } from '../core/config.js';
import type { Gateway } from '../core/gateway.js';
import { joinCodesOf, joinUrl, joinUrlProblem } from '../core/join-codes.js';
import { DEFAULT_SETUP_TTL_MS, MAX_SETUP_TTL_MS, MIN_SETUP_TTL_MS, mintSetupCode, resolveSetupProfile, viewSetupCode } from '../core/setup-codes.js';
import { setupQuorumRefusal } from '../core/setup-quorum.js';

const SetupId = T.String({ pattern: '^[0-9a-f]{16}$' });
const Url = T.String({ minLength: 1, maxLength: 2048 });

export interface Advertised {
  /** The public URL if configured, else the listening URL. */
  url: string;
  /** Set when the gateway serves TLS itself: setup codes for wss:// URLs carry it for pinning. */
  tlsFingerprint?: string | undefined;
}

const advertisedUrls = new WeakMap<object, Advertised>();

/** Record where the gateway is reachable (set once the server listens). */
export function setAdvertisedUrl(gw: Gateway, advertised: Advertised): void {
  advertisedUrls.set(gw, advertised);
}

/** Where the gateway is reachable, once the server listens (links in approval notifications). */
export function advertisedUrlOf(gw: object): string | undefined {
  return advertisedUrls.get(gw)?.url;
}

interface SetupCodeParams {
  profile?: 'operator' | 'node' | 'operator+node';
  bootstrapProfile?: 'limited' | 'node';
  scopes?: string[];
  label?: string;
  ttlMs?: number;
  publicUrl?: string;
  urls?: string[];
  tlsFingerprint?: string;
  includeQr?: boolean;
  preferRemoteUrl?: boolean;
  joinUrl?: boolean;
}

/** What these methods use of the gateway (nothing else reaches them). */
export type SetupMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'random' | 'config' | 'identity' | 'joinCodes'>;

export function registerSetupMethods(gw: SetupMethodDeps): void {
  const method = 'device.pair.setupCode';
  const invalid = (problem: string) => new GatewayError('INVALID_PARAMS', { vars: { method, problem } });

  gw.methods.add({
    name: method,
    role: 'operator',
    scope: ADMIN,
    advertised: false,
    params: T.Object(
      {
        profile: T.Optional(T.Union([T.Literal('operator'), T.Literal('node'), T.Literal('operator+node')])),
        // The reference's name for it: 'node' is the node profile, 'limited' node + bounded operator.
        bootstrapProfile: T.Optional(T.Union([T.Literal('limited'), T.Literal('node')])),
        scopes: T.Optional(T.Array(T.String({ minLength: 1, maxLength: 128 }), { maxItems: 16 })),
        label: T.Optional(T.String({ maxLength: 64 })),
        ttlMs: T.Optional(T.Integer({ minimum: MIN_SETUP_TTL_MS, maximum: MAX_SETUP_TTL_MS })),
        publicUrl: T.Optional(Url),
        urls: T.Optional(T.Array(Url, { minItems: 1, maxItems: MAX_SETUP_URLS })),
        tlsFingerprint: T.Optional(T.String({ maxLength: 128 })),
        includeQr: T.Optional(T.Boolean()),
        preferRemoteUrl: T.Optional(T.Boolean()),
        // `openclaw devices join-code`: also return a single-use `…/j/<shortcode>` URL.
        joinUrl: T.Optional(T.Boolean()),
      },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params, log }) => {
      const p = params as SetupCodeParams;
      if (p.profile && p.bootstrapProfile) return invalid('pass profile or bootstrapProfile, not both');
      const unsafe = unsafeFieldError(method, { label: p.label });
      if (unsafe) return unsafe;
      if (p.includeQr) return invalid('includeQr is not supported: render `link` as a QR code yourself (`clawgate qr` prints one in the terminal)');
      const name = p.profile ?? (p.bootstrapProfile === 'node' ? 'node' : p.bootstrapProfile === 'limited' ? 'operator+node' : 'operator');
      const profile = resolveSetupProfile(name, p.scopes);
      if ('problem' in profile) return invalid(profile.problem);
      // A code approves its profile on redemption with nobody else's say: scopes under quorum
      // cannot be handed out that way (core/setup-quorum.ts).
      const underQuorum = setupQuorumRefusal(gw.config.approvalQuorum, profile.scopes);
      if (underQuorum) return underQuorum;
      const self = advertisedUrls.get(gw);
      const url = p.publicUrl !== undefined ? toWsUrl(p.publicUrl.trim()) : self?.url;
      if (!url) return invalid('the gateway does not know its own URL here: pass publicUrl');
      const urlProblem = setupUrlProblem(url);
      if (urlProblem) return invalid(`publicUrl ${urlProblem}`);
      const urls = p.urls?.map((u) => toWsUrl(u.trim()));
      for (const u of urls ?? []) {
        const problem = setupUrlProblem(u);
        if (problem) return invalid(`urls entry ${problem}`);
      }
      if (p.tlsFingerprint !== undefined && !/^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31})$/.test(p.tlsFingerprint)) {
        return invalid('tlsFingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed)');
      }
      if (p.joinUrl) {
        const problem = joinUrlProblem(url);
        if (problem) return invalid(`joinUrl: ${problem}`);
      }
      const label = p.label?.trim() || undefined;
      const ttlMs = p.ttlMs ?? DEFAULT_SETUP_TTL_MS;
      // With native TLS a wss:// code carries our certificate's fingerprint, so the new device can
      // pin a self-signed certificate instead of trusting whatever answers at that address.
      const tlsFingerprint = p.tlsFingerprint ?? (self?.tlsFingerprint && url.startsWith('wss://') ? self.tlsFingerprint : undefined);
      // The identity key's fingerprint goes into every code: the device checks the challenge
      // signature end to end before it sends the bootstrap token, whatever proxies sit between.
      const gatewayKey = gw.identity?.fingerprint;
      const minted = await mintSetupCode(gw, { profile, url, urls, tlsFingerprint, gatewayKey, label, ttlMs, createdBy: principal.actor });
      const r = minted.record;
      let join: string | undefined;
      if (p.joinUrl) {
        const decoded = decodeSetupCode(minted.setupCode);
        if (!decoded.ok) throw new Error(`a minted setup code does not decode: ${decoded.problem}`);
        join = joinUrl(url, joinCodesOf(gw).register(decoded.payload));
      }
      log.info('setup code minted', {
        setupId: r.setupId,
        profile: profile.name,
        by: principal.actor,
        expiresAtMs: r.expiresAtMs,
        joinUrl: join !== undefined,
      });
      const view: SetupMintView = {
        ...(join !== undefined ? { joinUrl: join } : {}),
        setupId: r.setupId,
        setupCode: minted.setupCode,
        link: minted.link,
        expiresAtMs: r.expiresAtMs,
        gatewayUrl: url,
        ...(urls ? { gatewayUrls: urls } : {}),
        ...(tlsFingerprint ? { tlsFingerprint } : {}),
        ...(gatewayKey ? { gatewayKey } : {}),
        urlSource: p.publicUrl !== undefined ? 'request.publicUrl' : gw.config.publicUrl !== undefined ? 'gateway.publicUrl' : 'gateway.url',
        auth: gw.config.token ? 'token' : gw.config.password ? 'password' : 'none',
        access: profile.name,
        profile: profile.name,
        roles: profile.roles,
        scopes: profile.scopes,
        label: label ?? null,
      };
      return view;
    },
  });

  gw.methods.add({
    name: 'device.pair.setupStatus',
    role: 'operator',
    scope: ADMIN,
    advertised: false,
    params: T.Object({ setupId: T.Optional(SetupId) }, { additionalProperties: false }),
    handler: async ({ params }) => {
      const { setupId } = params as { setupId?: string };
      const now = gw.clock.now();
      if (setupId === undefined) return { codes: (await gw.store.listSetupCodes()).map((c) => viewSetupCode(c, now)) };
      const c = await gw.store.getSetupCode(setupId);
      if (!c) return new GatewayError('UNKNOWN_SETUP_ID', { vars: { setupId } });
      const setup = viewSetupCode(c, now);
      // The reference's shape: `completion` once a device redeemed the code.
      const completion =
        c.redeemedAtMs !== undefined
          ? { setupId, deviceId: c.deviceId ?? null, ...(c.deviceName ? { deviceName: c.deviceName } : {}), access: c.profile.name, ts: c.redeemedAtMs }
          : undefined;
      return { setup, ...(completion ? { completion } : {}) };
    },
  });

  gw.methods.add({
    name: 'device.pair.setupRevoke',
    role: 'operator',
    scope: ADMIN,
    advertised: false,
    params: T.Object({ setupId: SetupId }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const { setupId } = params as { setupId: string };
      const now = gw.clock.now();
      const res = await gw.store.revokeSetupCode(setupId, now, { atMs: now, actor: principal.actor, action: 'setup.revoked', subject: setupId });
      if (!res) return new GatewayError('UNKNOWN_SETUP_ID', { vars: { setupId } });
      return { setupId, revoked: res.changed, setup: viewSetupCode(res.code, now) };
    },
  });
}

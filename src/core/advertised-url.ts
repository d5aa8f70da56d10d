/**
 * Where this gateway is reachable, recorded by the composition root once the server listens and
 * read by the setup-code methods and the approval notifier (so neither imports the other).
 */
export interface Advertised {
  /** The public URL if configured, else the listening URL. */
  url: string;
  /** Set when the gateway serves TLS itself: setup codes for wss:// URLs carry it for pinning. */
  tlsFingerprint?: string | undefined;
}

const advertisedUrls = new WeakMap<object, Advertised>();

/** Record where the gateway is reachable (set once the server listens). */
export function setAdvertisedUrl(gw: object, advertised: Advertised): void {
  advertisedUrls.set(gw, advertised);
}

/** Where the gateway is reachable, once the server listens (links in approval notifications). */
export function advertisedUrlOf(gw: object): string | undefined {
  return advertisedUrls.get(gw)?.url;
}

/** Where the gateway is reachable and its TLS pin, once the server listens (setup codes). */
export function advertisedOf(gw: object): Advertised | undefined {
  return advertisedUrls.get(gw);
}

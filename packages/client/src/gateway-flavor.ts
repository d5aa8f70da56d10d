/**
 * Which gateway software a client is talking to, so the next steps it prints name commands that
 * exist on that gateway host. A clawgate gateway signs every `connect.challenge` (the `gateway`
 * proof block); a real OpenClaw gateway sends a bare `{nonce, ts}`. Only the hint text depends on
 * this: trust never does (a pinned key is checked whatever the flavour).
 */
export type GatewayFlavor = 'clawgate' | 'openclaw';

/** The flavour a challenge payload shows: a `gateway` field (valid or not) is clawgate's. */
export function flavorOfChallenge(payload: unknown): GatewayFlavor {
  return typeof payload === 'object' && payload !== null && 'gateway' in payload ? 'clawgate' : 'openclaw';
}

/** The gateway-host commands a next step names, in the flavour's own CLI. */
export interface GatewayHostCommands {
  approveDevice(requestId: string): string;
  approveNode(requestId: string): string;
  /** Mint a setup code; `node` asks for one that pairs a node host. */
  mintCode(node?: boolean): string;
  /** Where the gateway key's fingerprint is shown (OpenClaw has no gateway key). */
  showKey: string;
}

export function gatewayHostCommands(flavor: GatewayFlavor): GatewayHostCommands {
  if (flavor === 'openclaw') {
    return {
      approveDevice: (id) => `openclaw devices approve ${id}`,
      approveNode: (id) => `openclaw nodes approve ${id}`,
      // OpenClaw's default code already pairs operator + node.
      mintCode: () => 'openclaw qr',
      showKey: 'openclaw qr',
    };
  }
  return {
    approveDevice: (id) => `clawgate devices approve ${id}`,
    approveNode: (id) => `clawgate nodes approve ${id}`,
    mintCode: (node) => (node ? 'clawgate qr --profile node' : 'clawgate qr'),
    showKey: 'clawgate qr',
  };
}

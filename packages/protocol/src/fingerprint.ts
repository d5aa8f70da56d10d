/** TLS certificate fingerprints as setup codes and pinning clients spell them. Pure. */

/** `AB:CD:…` or `abcd…` → `abcd…` (64 lowercase hex); null when it is not a SHA-256 fingerprint. */
export function normalizeFingerprint(text: string): string | null {
  const hex = text.trim().replace(/:/g, '').toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
}

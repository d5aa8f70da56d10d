/**
 * The confirmation code of a pairing request: six digits derived from the request id and the
 * device key, shown both to the person approving (CLI, Control UI) and on the requesting device
 * (`PAIRING_REQUIRED` details, the `device.pair.waiting` event), so they can check they are
 * approving the device in front of them. It is a comparison aid, not a secret: anyone who can
 * list pending requests sees it.
 */
export function confirmationCode(req: { requestId: string; publicKey: string }): string {
  let h = 2166136261;
  for (const c of `${req.requestId}|${req.publicKey}`) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return String(h % 1_000_000).padStart(6, '0');
}

// Does a delivery come from whoever holds the trigger's secret? Compared in constant time
// (a bearer token: secret.ts; a signature: both are SHA-256 digests, of one length).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { sameSecret } from '../secret.ts';
import type { WebhookTriggerAuth } from '../../../shared/api-webhook-triggers.ts';

export interface DeliveryCredentials {
  authorization?: string | undefined;
  signature?: string | undefined;
}

/** True when the request carries the secret the trigger's auth asks for; false for anything else. */
export function verifyDelivery(auth: WebhookTriggerAuth, secret: string, body: Buffer, given: DeliveryCredentials): boolean {
  if (auth === 'bearer') {
    const m = /^Bearer ([^\s]+)$/i.exec(given.authorization?.trim() ?? '');
    return m !== null && sameSecret(m[1]!, secret);
  }
  const m = /^sha256=([0-9a-f]{64})$/i.exec(given.signature?.trim() ?? '');
  if (!m) return false;
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(Buffer.from(m[1]!.toLowerCase(), 'hex'), expected);
}

/** The header value a sender puts in X-Berth-Signature-256 for `body`. */
export function signDelivery(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

// Slack signs every request it sends with the app's signing secret: `v0=` and the hex
// HMAC-SHA256 of `v0:TIMESTAMP:BODY` (https://api.slack.com/authentication/verifying-requests-from-slack).
//
// Checked here rather than with @slack/bolt's verifySlackRequest: bolt is the only package
// that exports it, and installing bolt brings 90-odd packages (express 5, socket mode, OAuth,
// 23 MB) whose root import loads express; its deep file is no public API; and it refuses only
// stale timestamps, not ones from the future. The check is the fifteen lines below.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Older than this (or this far ahead), a request is refused: a replayed one cannot start anything. */
export const MAX_SKEW_S = 5 * 60;

/** Fails closed: anything but a well-formed, fresh, matching signature is false. */
export function verifySlackSignature(o: { signingSecret: string; timestamp: string | undefined; signature: string | undefined; body: Buffer; now: Date }): boolean {
  if (!o.signingSecret || !o.timestamp || !o.signature || !/^\d{1,12}$/.test(o.timestamp)) return false;
  if (Math.abs(o.now.getTime() / 1000 - Number(o.timestamp)) > MAX_SKEW_S) return false;
  const expected = Buffer.from(`v0=${createHmac('sha256', o.signingSecret).update(`v0:${o.timestamp}:`).update(o.body).digest('hex')}`);
  const given = Buffer.from(o.signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

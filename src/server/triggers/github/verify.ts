// Is a delivery GitHub's? X-Hub-Signature-256 is an HMAC-SHA256 of the body's bytes under the
// App's webhook secret; octokit's verify compares it in constant time.
import { verify } from '@octokit/webhooks-methods';

const SIGNATURE = /^sha256=[0-9a-f]{64}$/;

/**
 * Whether `signature` signs exactly `body` with `secret`. Fails closed: no secret, no body, a
 * missing or malformed header, or a body that is not UTF-8 (verify signs text, and re-encoding
 * would sign other bytes than those sent) is not signed.
 */
export async function signedBy(secret: string, body: Buffer | undefined, signature: unknown): Promise<boolean> {
  if (!secret || !body?.length || typeof signature !== 'string') return false;
  const given = signature.trim().toLowerCase();
  if (!SIGNATURE.test(given)) return false;
  const text = body.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(body)) return false;
  try {
    return await verify(secret, text, given);
  } catch {
    return false;
  }
}

// A webhook's secret token compared with the one on record, in constant time whatever the
// lengths: both sides are hashed to equal-length digests first, so neither the length nor the
// first wrong byte of a guess shows in the time taken. An empty secret on record matches nothing.
import { createHash, timingSafeEqual } from 'node:crypto';

export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected)) && expected.length > 0;
}

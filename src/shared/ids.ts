import { randomBytes } from 'node:crypto';

// Ids are branded by kind so an environment id cannot be passed where a token id is meant.
export type Id<K extends string> = string & { readonly __kind: K };
export type EnvironmentId = Id<'env'>;

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

function randomSuffix(length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += ALPHABET[b & 31];
  return out;
}

export function newId<K extends string>(prefix: K, length = 12): Id<K> {
  return `${prefix}_${randomSuffix(length)}` as Id<K>;
}

export const isEnvironmentId = (s: string): s is EnvironmentId => /^env_[0-9a-z]{12}$/.test(s);

export function randomName(prefix: string): string {
  return `${prefix}-${randomSuffix(6)}`;
}

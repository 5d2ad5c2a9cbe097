// Egress-only secrets: how a secret is marked, and the header the proxy adds with it.
import { invalid } from '../../shared/errors.ts';
import { checkDomain } from './domains.ts';

export interface EgressMarking {
  host: string;
  pathPrefix: string;
  header: string;
  /** The header's value, with {value} where the secret goes. */
  format: string;
}

// Headers the proxy itself must own: a secret put there would break or smuggle requests.
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive', 'proxy-connection']);

/** The marking with its defaults, or a 400 naming the field that is wrong. */
export function checkEgressMarking(input: { host: string; pathPrefix?: string | undefined; header?: string | undefined; format?: string | undefined }): EgressMarking {
  const host = checkDomain(input.host, 'egress.host');
  if (host.startsWith('*.')) throw invalid('an egress-only secret goes to one exact host, not a wildcard', 'egress.host');
  const pathPrefix = input.pathPrefix ?? '/';
  // A path, matched on whole segments by the proxy (pathUnder): a query or fragment could never match.
  if (!/^\/[\x21-\x7e]*$/.test(pathPrefix) || /[?#]/.test(pathPrefix) || pathPrefix.length > 1024) {
    throw invalid('the path prefix is a path: it starts with / and has no spaces, control characters, ? or #, e.g. /v1 (which covers /v1 and /v1/…, not /v10)', 'egress.pathPrefix');
  }
  const header = input.header ?? 'Authorization';
  if (!/^[A-Za-z0-9-]{1,100}$/.test(header)) throw invalid('the header is a name of letters, digits and dashes, e.g. Authorization', 'egress.header');
  if (RESERVED.has(header.toLowerCase())) throw invalid(`the proxy sets ${header} itself: choose another header`, 'egress.header');
  const format = input.format ?? 'Bearer {value}';
  if (!format.includes('{value}')) throw invalid("the format must contain {value}, e.g. 'Bearer {value}'", 'egress.format');
  if (/[\r\n\0]/.test(format) || format.length > 1024) throw invalid('the format is one line', 'egress.format');
  return { host, pathPrefix, header, format };
}

export const credentialValue = (format: string, value: string) => format.replaceAll('{value}', value);

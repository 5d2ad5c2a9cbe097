// Domain names in policies: checked strictly when set, matched by the proxy's rules.
import { invalid } from '../../shared/errors.ts';

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The domain in canonical form (lower case), or a 400 that says what is wrong with it:
 * no schemes, paths, ports or IP addresses, and `*` only as a whole leading label.
 */
export function checkDomain(input: string, field = 'allowDomains'): string {
  const d = input.trim().toLowerCase();
  const refuse = (why: string) => invalid(`'${input}' is not an allowed domain: ${why}`, field);
  if (d.length === 0) throw refuse('it is empty');
  if (d.includes('://')) throw refuse(`give the host name alone, without a scheme (${d.split('://')[1]?.split('/')[0] ?? 'example.com'})`);
  if (d.includes('/')) throw refuse('give the host name alone, without a path');
  if (d.includes(':') || d.startsWith('[')) throw refuse('IP addresses and ports are not allowed: give a domain name (ports are set with --port)');
  if (d.length > 253) throw refuse('it is longer than 253 characters');
  const wildcard = d.startsWith('*.');
  const name = wildcard ? d.slice(2) : d;
  if (name.includes('*')) throw refuse("'*' may only be the whole first label, as in *.example.com");
  if (d.endsWith('.')) throw refuse('leave out the trailing dot');
  const labels = name.split('.');
  if (labels.every((l) => /^\d+$/.test(l))) throw refuse('IP addresses are not allowed: give a domain name');
  if (labels.length < 2) throw refuse(wildcard ? 'a wildcard needs at least two labels after it, as in *.example.com' : 'give a full domain name, as in example.com');
  for (const l of labels) if (!LABEL.test(l)) throw refuse(`'${l}' is not a valid label (letters, digits and inner dashes, at most 63)`);
  if (/^\d+$/.test(labels.at(-1)!)) throw refuse('the last label cannot be all digits');
  return d;
}

/** Canonical, de-duplicated domains in the order given. */
export function checkDomains(list: readonly string[], field = 'allowDomains'): string[] {
  return [...new Set(list.map((d, i) => checkDomain(d, `${field}.${i}`)))];
}

/** Whether `host` is allowed by `rule`: exact, or `*.example.com` for any name below example.com (not example.com itself). */
export function domainMatches(rule: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return rule.startsWith('*.') ? h.endsWith(rule.slice(1)) && h.length > rule.length - 1 : h === rule;
}

/** Whether everything `rule` allows is also allowed by one of `allowed`: a narrower list may be set without widening. */
export function domainCovered(rule: string, allowed: readonly string[]): boolean {
  return allowed.some((a) => (rule.startsWith('*.') ? a.startsWith('*.') && (rule === a || rule.endsWith(a.slice(1))) : domainMatches(a, rule)));
}

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'] as const;

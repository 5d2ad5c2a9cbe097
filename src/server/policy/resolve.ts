// Which policy an environment gets: pure, so the rules are tested without a database.
import { domainCovered, checkDomain } from './domains.ts';
import { isPreset, PRESETS } from './presets.ts';
import { mirrorEndpoint, resolveMirrors, type MirrorMap } from './mirrors.ts';
import type { EgressPolicy } from './types.ts';

export const DEFAULT_MAX_CONNECTIONS = 256;
/** What the proxy allows when no scope sets ports (request-filter.ts). */
export const DEFAULT_PORTS = [80, 443];

/** One scope's settings; null is "not set here". */
export interface PolicyFields {
  allowDomains: string[] | null;
  presets: string[] | null;
  allowPorts: number[] | null;
  allowMethods: string[] | null;
  maxConnections: number | null;
  /** Package mirrors (org and projects only), merged ecosystem by ecosystem. */
  mirrors: MirrorMap | null;
}

export const EMPTY_FIELDS: PolicyFields = { allowDomains: null, presets: null, allowPorts: null, allowMethods: null, maxConnections: null, mirrors: null };

/** A scope's settings with the name the resolved policy reports when they win. */
export interface Layer {
  scope: string;
  fields: PolicyFields;
}

/**
 * The narrowest scope that sets a field wins it, field by field; domains and presets
 * are one field (the allow list), so an environment's own list replaces its project's
 * rather than adding to it. Nothing set anywhere: deny everything.
 *
 * @param layers narrowest first: environment, project, org
 */
export function resolvePolicy(layers: Layer[], credentials: EgressPolicy['credentials'] = []): EgressPolicy {
  const list = layers.find((l) => l.fields.allowDomains !== null || l.fields.presets !== null);
  // The mirrors' hosts are allowed wherever the mirrors apply (and their ports, for every allowed host: ports are not per host).
  const mirrors = resolveMirrors(layers).map((m) => mirrorEndpoint(m.url));
  let allowPorts = layers.find((l) => l.fields.allowPorts !== null)?.fields.allowPorts ?? null;
  const extraPorts = mirrors.map((m) => m.port).filter((p) => !(allowPorts ?? DEFAULT_PORTS).includes(p));
  if (extraPorts.length) allowPorts = [...new Set([...(allowPorts ?? DEFAULT_PORTS), ...extraPorts])].sort((a, b) => a - b);
  // Presets stay names: the proxy matches their hosts and reports `preset:npm` as the rule.
  return {
    allowDomains: [...new Set([...(list?.fields.allowDomains ?? []), ...mirrors.map((m) => m.host)])],
    presets: (list?.fields.presets ?? []).filter(isPreset),
    allowPorts,
    allowMethods: layers.find((l) => l.fields.allowMethods !== null)?.fields.allowMethods ?? null,
    maxConnections: layers.find((l) => l.fields.maxConnections !== null)?.fields.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    credentials,
    scope: list?.scope ?? 'default',
  };
}

/**
 * The project's layer: its policy, with the domains of its `work.allowDomains` setting
 * (what `berth project create --allow-domain` sets, and what its tasks read alongside
 * berth.yaml) added to its allow list. Entries that are not valid domains are skipped.
 */
export function projectLayer(name: string, fields: PolicyFields | undefined, workDomains: readonly string[] | undefined): Layer {
  const f = fields ?? EMPTY_FIELDS;
  const extra: string[] = [];
  for (const d of workDomains ?? []) {
    try {
      extra.push(checkDomain(d));
    } catch {
      // Checked loosely when the project was made; the policy takes only what is valid.
    }
  }
  if (extra.length === 0) return { scope: `project:${name}`, fields: f };
  return { scope: `project:${name}`, fields: { ...f, allowDomains: [...new Set([...(f.allowDomains ?? []), ...extra])] } };
}

/** Why `wanted` would allow more than `inherited` does, or null when it allows no more. */
export function wideningOf(wanted: PolicyFields, inherited: EgressPolicy): string | null {
  const allowed = [...inherited.allowDomains, ...inherited.presets.filter(isPreset).flatMap((p) => PRESETS[p])];
  for (const d of wanted.allowDomains ?? []) {
    if (!domainCovered(d, allowed)) return `${d} is not allowed by the ${inherited.scope} policy`;
  }
  for (const p of wanted.presets ?? []) {
    if (isPreset(p) && !inherited.presets.includes(p) && !PRESETS[p].every((d) => domainCovered(d, allowed))) return `preset ${p} is not allowed by the ${inherited.scope} policy`;
  }
  if (wanted.allowPorts) {
    const ports = inherited.allowPorts ?? DEFAULT_PORTS;
    const extra = wanted.allowPorts.find((p) => !ports.includes(p));
    if (extra !== undefined) return `port ${extra} is not allowed by the inherited policy`;
  }
  if (wanted.allowMethods && inherited.allowMethods) {
    const extra = wanted.allowMethods.find((m) => !inherited.allowMethods!.includes(m));
    if (extra !== undefined) return `method ${extra} is not allowed by the inherited policy`;
  }
  if (wanted.maxConnections !== null && wanted.maxConnections > inherited.maxConnections) {
    return `more than ${inherited.maxConnections} connections is more than the inherited policy allows`;
  }
  return null;
}

/**
 * Why `next` would allow more than `bound` does, or null when it allows no more: the same
 * test as wideningOf, on two resolved policies, so that a field set back to null (inherit,
 * which may be wider) or a whole scope removed counts as the widening it is.
 */
export function wideningOver(next: EgressPolicy, bound: EgressPolicy): string | null {
  if (bound.allowMethods !== null && next.allowMethods === null) return `any method is more than the ${bound.scope} policy allows (${bound.allowMethods.join(', ')})`;
  return wideningOf({ allowDomains: next.allowDomains, presets: next.presets, allowPorts: next.allowPorts ?? DEFAULT_PORTS, allowMethods: next.allowMethods, maxConnections: next.maxConnections, mirrors: null }, bound);
}

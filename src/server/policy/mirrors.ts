// Package mirrors in policies: set for the org or a project (the project's wins, ecosystem
// by ecosystem), checked strictly when set. Their hosts are allowed, and a mirror's
// credential is an egress-only secret the egress proxy adds: it never enters an environment.
import { invalid } from '../../shared/errors.ts';
import { isMirrorEcosystem, MIRROR_ECOSYSTEMS, type MirrorEcosystem, type PackageMirror } from '../../runner/mirrors.ts';
import type { EgressSecret } from '../secrets/service.ts';
import { credentialValue } from './credentials.ts';
import { checkDomain } from './domains.ts';
import type { EgressPolicy } from './types.ts';

export { MIRROR_ECOSYSTEMS, type MirrorEcosystem };

/** One scope's mirrors as stored: the URL, and the name of the egress-only secret the proxy adds for it. */
export type MirrorMap = Partial<Record<MirrorEcosystem, { url: string; secret: string | null }>>;

/** A change to one scope's mirrors: an ecosystem given is set (null: removed here), the others are kept. */
export type MirrorPatch = Record<string, { url: string; secret?: string | null | undefined } | null>;

/** A mirror that applies, with the scope that set it. */
export interface ResolvedMirror extends PackageMirror {
  secret: string | null;
  /** 'org' or 'project:NAME'. */
  scope: string;
}

const EXAMPLE: Record<MirrorEcosystem, string> = {
  npm: 'https://nexus.example.com/repository/npm/',
  pypi: 'https://nexus.example.com/repository/pypi/simple/',
  go: 'https://nexus.example.com/repository/go/',
  crates: 'https://nexus.example.com/repository/cargo/',
  maven: 'https://nexus.example.com/repository/maven-public/',
  apt: 'https://nexus.example.com/repository/debian/',
};

/** The mirror's URL in canonical form (ending in /), or a 400 that says what to give instead. */
export function checkMirrorUrl(ecosystem: MirrorEcosystem, input: string): string {
  const field = `mirrors.${ecosystem}.url`;
  const example = `e.g. ${ecosystem}=${EXAMPLE[ecosystem]}`;
  let u: URL;
  try {
    u = new URL(input.trim());
  } catch {
    throw invalid(`the ${ecosystem} mirror '${input}' is not a URL: give its full address, ${example}`, field);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw invalid(`the ${ecosystem} mirror must be an https:// or http:// URL, not ${u.protocol.replace(/:$/, '')}: ${example}`, field);
  if (u.username || u.password) {
    throw invalid(`the ${ecosystem} mirror's URL must not carry credentials (environments would see them): keep them in an egress-only secret (\`berth secret set NAME --egress-only --host ${u.hostname}\`) and name it with --mirror-secret ${ecosystem}=NAME`, field);
  }
  if (u.search || u.hash) throw invalid(`the ${ecosystem} mirror's URL must have no query or fragment: ${example}`, field);
  // A domain name, as the egress policy allows only names: the proxy resolves it.
  checkDomain(u.hostname, field);
  if (/["\s\\]/.test(decodeURI(u.pathname))) throw invalid(`the ${ecosystem} mirror's path must have no quotes, spaces or backslashes`, field);
  return u.href.endsWith('/') ? u.href : `${u.href}/`;
}

/** The host and port the proxy is asked for when a tool uses the mirror. */
export function mirrorEndpoint(url: string): { host: string; port: number; https: boolean } {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  return { host: u.hostname, port: u.port ? Number(u.port) : https ? 443 : 80, https };
}

/**
 * The scope's mirrors after `patch`, checked; `secretHost(name)` is the host the named
 * egress-only secret goes to (undefined when there is none the scope may use).
 */
export function applyMirrorPatch(current: MirrorMap | null, patch: MirrorPatch | null, secretHost: (name: string) => string | undefined): MirrorMap | null {
  if (patch === null) return null;
  const next: MirrorMap = { ...(current ?? {}) };
  for (const [name, entry] of Object.entries(patch)) {
    if (!isMirrorEcosystem(name)) throw invalid(`no mirror kind '${name}': mirrors are for ${MIRROR_ECOSYSTEMS.join(', ')}`, 'mirrors');
    if (entry === null) {
      delete next[name];
      continue;
    }
    const url = checkMirrorUrl(name, entry.url);
    const secret = entry.secret ?? null;
    if (secret !== null) {
      const { host, https } = mirrorEndpoint(url);
      if (!https) throw invalid(`the egress proxy adds a credential over TLS only: give the ${name} mirror's https:// URL, or no secret`, `mirrors.${name}.secret`);
      const at = secretHost(secret);
      if (at === undefined) throw invalid(`no egress-only secret '${secret}' here: set it with \`berth secret set ${secret} --egress-only --host ${host}\` (add --format 'Basic {value}' for a user:password pair)`, `mirrors.${name}.secret`);
      if (at !== host) throw invalid(`the secret '${secret}' is sent to ${at}, not to the ${name} mirror's host ${host}: set it again with --host ${host}`, `mirrors.${name}.secret`);
    }
    next[name] = { url, secret };
  }
  return Object.keys(next).length ? next : null;
}

/** The mirrors that apply: the narrowest scope's for each ecosystem. */
export function resolveMirrors(layers: readonly { scope: string; fields: { mirrors: MirrorMap | null } }[]): ResolvedMirror[] {
  const out: ResolvedMirror[] = [];
  for (const ecosystem of MIRROR_ECOSYSTEMS) {
    for (const l of layers) {
      const m = l.fields.mirrors?.[ecosystem];
      if (m) {
        out.push({ ecosystem, url: m.url, secret: m.secret, scope: l.scope });
        break;
      }
    }
  }
  return out;
}

/**
 * The mirrors' credentials for the egress proxy: a mirror the org set uses the org's
 * secret of that name; a project's, the project's own secret over the org's. Only a
 * secret marked for the mirror's host, and only over https.
 */
export function mirrorCredentials(mirrors: readonly ResolvedMirror[], secrets: readonly EgressSecret[], orgId: string, projectId: string | null): EgressPolicy['credentials'] {
  const out: EgressPolicy['credentials'] = [];
  for (const m of mirrors) {
    if (!m.secret) continue;
    const { host, https } = mirrorEndpoint(m.url);
    const named = secrets.filter((s) => s.orgId === orgId && s.name === m.secret && (s.projectId === null || (m.scope !== 'org' && s.projectId === projectId)));
    const s = named.find((x) => x.projectId !== null) ?? named[0];
    if (!https || !s || s.host !== host) continue;
    // Several mirrors on one host often share one secret: the proxy needs it once.
    if (out.some((c) => c.name === s.name && c.host === host)) continue;
    out.push({ host, pathPrefix: s.pathPrefix, header: s.header, value: credentialValue(s.format, s.value), name: s.name });
  }
  return out;
}

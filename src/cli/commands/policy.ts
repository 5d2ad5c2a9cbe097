import type { Command } from 'commander';
import type { EffectivePolicy as Effective, PolicyView } from '../../shared/api.ts';
import type { ApiClient } from '../client.ts';
import { emit, printJson, printTable, usageError } from '../output.ts';

type Client = () => ApiClient;

const UNSET = { domains: 'allowDomains', presets: 'presets', ports: 'allowPorts', methods: 'allowMethods', 'max-connections': 'maxConnections', mirrors: 'mirrors' } as const;
const ECOSYSTEMS = ['npm', 'pypi', 'go', 'crates', 'maven', 'apt'];

/** `npm=https://…` as [npm, https://…]; the server checks the URL and the kind's name again. */
function pair(flag: string, value: string, what: string): [string, string] {
  const at = value.indexOf('=');
  const kind = value.slice(0, at);
  if (at < 1 || !value.slice(at + 1)) throw usageError(`${flag} takes KIND=${what}, e.g. ${flag} npm=${what === 'URL' ? 'https://nexus.example.com/repository/npm/' : 'NEXUS_TOKEN'}; got '${value}'`);
  if (!ECOSYSTEMS.includes(kind)) throw usageError(`${flag}: no mirror kind '${kind}': mirrors are for ${ECOSYSTEMS.join(', ')}`);
  return [kind, value.slice(at + 1)];
}

/** The mirrors part of a policy change, from --mirror, --mirror-secret and --remove-mirror. */
function mirrorPatch(o: { mirror?: string[]; mirrorSecret?: string[]; removeMirror?: string[] }): Record<string, { url: string; secret: string | null } | null> | undefined {
  const urls = new Map((o.mirror ?? []).map((v) => pair('--mirror', v, 'URL')));
  const secrets = new Map((o.mirrorSecret ?? []).map((v) => pair('--mirror-secret', v, 'SECRET')));
  for (const kind of secrets.keys()) if (!urls.has(kind)) throw usageError(`--mirror-secret ${kind}=… goes with the mirror it is for: add --mirror ${kind}=URL`);
  const patch: Record<string, { url: string; secret: string | null } | null> = {};
  for (const [kind, url] of urls) patch[kind] = { url, secret: secrets.get(kind) ?? null };
  for (const kind of o.removeMirror ?? []) {
    if (!ECOSYSTEMS.includes(kind)) throw usageError(`--remove-mirror: no mirror kind '${kind}': mirrors are for ${ECOSYSTEMS.join(', ')}`);
    if (kind in patch) throw usageError(`--mirror ${kind}=… and --remove-mirror ${kind} cannot go together`);
    patch[kind] = null;
  }
  return Object.keys(patch).length ? patch : undefined;
}

const mirrorsList = (m: Record<string, { url: string; secret: string | null }> | null | undefined) =>
  m ? Object.entries(m).map(([k, v]) => `${k}=${v.url}${v.secret ? ` (secret ${v.secret})` : ''}`).join(', ') || '(none)' : '-';

/** The API path of the scope the options name: the org, --project P or --env E. */
function scopePath(c: ApiClient, o: { project?: string; env?: string }): string {
  if (o.project && o.env) throw usageError('give --project or --env, not both');
  if (o.project) return c.orgPath(`policies/projects/${encodeURIComponent(o.project)}`);
  if (o.env) return c.orgPath(`policies/environments/${encodeURIComponent(o.env)}`);
  return c.orgPath('policies/org');
}

const list = (v: readonly (string | number)[] | null | undefined, none = '-') => (v === null || v === undefined ? none : v.length ? v.join(', ') : '(none)');

function port(value: string, previous: number[] = []): number[] {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw usageError(`--port takes whole numbers from 1 to 65535, got '${value}'`);
  return [...previous, n];
}

function printPolicy(p: { own: PolicyView | null; effective: Effective }): void {
  const e = p.effective;
  const lines: [string, string][] = [
    ['from', e.scope === 'default' ? 'default (nothing set: every domain is refused)' : e.scope],
    ['domains', list(e.allowDomains)],
    ['presets', list(e.presets)],
    ['ports', e.allowPorts === null ? '80, 443 (default)' : list(e.allowPorts)],
    ['methods', e.allowMethods === null ? 'any' : list(e.allowMethods)],
    ['max connections', String(e.maxConnections)],
    ['mirrors', e.mirrors.length ? e.mirrors.map((m) => `${m.ecosystem} ${m.url}${m.secret ? ` (secret ${m.secret}, added by the proxy)` : ''} from ${m.scope}`).join('; ') : '-'],
    ['credentials', e.credentials.length ? e.credentials.map((c) => `${c.name} → ${c.header} for ${c.host}${c.pathPrefix === '/' ? '' : c.pathPrefix}`).join('; ') : '-'],
  ];
  if (p.own) lines.push(['own policy', `set ${p.own.updatedAt} by ${p.own.updatedBy} (${p.own.setByRole}: a lower role may only narrow it)`]);
  const width = Math.max(...lines.map(([k]) => k.length));
  process.stdout.write(`${lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}\n`);
}

export function policyCommands(program: Command, client: Client): void {
  const policy = program
    .command('policy')
    .description("what environments may reach on the network: the org's, a project's or an environment's policy (the narrowest that sets a field wins)");

  policy
    .command('show')
    .description('the policy that applies to the org, a project or an environment, and where it comes from')
    .option('--project <project>', "a project's")
    .option('--env <environment>', "an environment's")
    .option('--json', 'print JSON')
    .action(async (o) => {
      if (o.project && o.env) throw usageError('give --project or --env, not both');
      const q = new URLSearchParams();
      if (o.project) q.set('project', o.project);
      if (o.env) q.set('environment', o.env);
      const p = await client().request<{ own: PolicyView | null; effective: Effective }>('GET', client().orgPath(`policies/effective${q.size ? `?${q}` : ''}`));
      if (o.json) return printJson(p);
      printPolicy(p);
    });

  policy
    .command('list')
    .alias('ls')
    .description('every scope with a policy of its own')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: PolicyView[] }>('GET', client().orgPath('policies'));
      if (o.json) return printJson(items);
      printTable(
        ['SCOPE', 'DOMAINS', 'PRESETS', 'PORTS', 'METHODS', 'MAX CONN', 'MIRRORS'],
        items.map((p) => [p.target ? `${p.scope}:${p.target}` : p.scope, list(p.allowDomains), list(p.presets), list(p.allowPorts), list(p.allowMethods), p.maxConnections === null ? '-' : String(p.maxConnections), mirrorsList(p.mirrors)]),
      );
    });

  policy
    .command('set')
    .description('set fields of the org\'s policy, or of --project P or --env E; fields not given are kept')
    .option('--project <project>', "a project's policy (admins)")
    .option('--env <environment>', "an environment's policy (members may narrow it, admins widen it)")
    .option('--allow-domain <domain...>', 'domains it may reach: example.com or *.example.com (replaces the list)')
    .option('--preset <name...>', 'package registries: npm, pypi, crates, go, debian, ubuntu, github (replaces the list)')
    .option('--port <port...>', 'ports it may connect to (default 80 and 443)', (v: string, prev: number[] | undefined) => port(v, prev))
    .option('--method <method...>', 'HTTP methods plain HTTP may use (default any)')
    .option('--max-connections <n>', 'connections it may hold open at once (default 256)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw usageError(`--max-connections is a whole number of at least 1, got '${v}'`);
      return n;
    })
    .option('--mirror <kind=url...>', `package mirror for ${ECOSYSTEMS.join(', ')} (org or --project), e.g. npm=https://nexus.example.com/repository/npm/: environments' tools use it and its host is allowed (other kinds are kept)`)
    .option('--mirror-secret <kind=secret...>', "with --mirror: an egress-only secret for the mirror's host (berth secret set NAME --egress-only --host HOST), added by the egress proxy, never seen inside")
    .option('--remove-mirror <kind...>', 'no longer set a mirror for these kinds here')
    .option('--unset <field...>', `no longer set here, so inherited: ${Object.keys(UNSET).join(', ')}`)
    .option('--json', 'print JSON')
    .action(async (o) => {
      const body: Record<string, unknown> = {};
      if (o.allowDomain) body.allowDomains = o.allowDomain;
      if (o.preset) body.presets = o.preset;
      if (o.port) body.allowPorts = o.port;
      if (o.method) body.allowMethods = o.method;
      if (o.maxConnections !== undefined) body.maxConnections = o.maxConnections;
      const mirrors = mirrorPatch(o);
      if (mirrors) body.mirrors = mirrors;
      for (const f of (o.unset as string[] | undefined) ?? []) {
        const field = UNSET[f as keyof typeof UNSET];
        if (!field) throw usageError(`--unset takes ${Object.keys(UNSET).join(', ')}; got '${f}'`);
        if (field in body) throw usageError(`--unset ${f} and a value for it cannot go together`);
        body[field] = null;
      }
      if (Object.keys(body).length === 0) throw usageError('nothing to set: give --allow-domain, --preset, --port, --method, --max-connections, --mirror, --remove-mirror or --unset');
      const p = await client().request<PolicyView>('PATCH', scopePath(client(), o), body);
      if (o.json) return printJson(p);
      process.stdout.write(`policy of ${p.target ? `${p.scope} ${p.target}` : 'the org'} set\n`);
    });

  policy
    .command('clear')
    .description("remove the org's, --project P's or --env E's own policy: the next wider one applies")
    .option('--project <project>', "a project's policy")
    .option('--env <environment>', "an environment's policy")
    .option('--json', 'print JSON: { scope, target, cleared }')
    .action(async (o) => {
      await client().request('DELETE', scopePath(client(), o));
      const scope = o.project ? 'project' : o.env ? 'environment' : 'org';
      emit(o, { scope, target: o.project ?? o.env ?? null, cleared: true }, `policy of ${o.project ? `project ${o.project}` : o.env ? `environment ${o.env}` : 'the org'} cleared`);
    });
}

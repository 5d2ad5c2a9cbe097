// The HTTP API's shapes, declared once: the server validates with them, /openapi.json
// is generated from them, and the CLI's client is typed by them.
import { z } from 'zod';
import { ENVIRONMENT_STATES } from './environment.ts';
import { parseDuration, parseSize } from './units.ts';
import { MAX_UID, MAX_VOLUMES, RUN_AS_USER, VOLUME_NAME, volumeTargetProblem } from './env-spec.ts';

export const ErrorSchema = z.object({
  error: z.object({
    kind: z.enum(['invalid', 'not_found', 'conflict', 'unauthorized', 'forbidden', 'rate_limited', 'unavailable', 'internal']),
    message: z.string(),
    field: z.string().optional(),
  }),
});

export const size = z
  .union([z.number().int().positive(), z.string().refine((s) => parseSize(s) !== undefined, 'expected a size such as 512m, 2g or a number of bytes')])
  .describe('bytes, or a size such as "512m", "2g"');

export const duration = z
  .union([
    z.number().int().nonnegative(),
    z.string().refine((s) => s === 'off' || parseDuration(s) !== undefined, 'expected a duration such as 90s, 30m, 24h or "off"'),
    z.null(),
  ])
  .describe('milliseconds, or a duration such as "30m", "24h"; null, 0 or "off" for none');

export const OrgRef = z.object({
  org: z.string().min(1).max(100).describe('org id or name'),
});

export const EnvironmentRef = OrgRef.extend({
  id: z.string().min(1).max(100).describe('environment id or name'),
});

export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

const RunAsUser = z.string().regex(RUN_AS_USER, 'a user name of the image (like node) or a uid').refine((u) => !/^\d+$/.test(u) || Number(u) <= MAX_UID, `a uid is at most ${MAX_UID}`);
const ForwardPorts = z.array(z.union([z.number().int().min(1).max(65_535), z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:\d{1,5}$/, 'a port or "service:port"')])).max(100);
const Volumes = z
  .array(z.strictObject({ name: z.string().regex(VOLUME_NAME, 'letters, digits, . _ - (at most 63)'), target: z.string().superRefine((t, ctx) => { const p = volumeTargetProblem(t); if (p) ctx.addIssue({ code: 'custom', message: `the target ${p}` }); }) }))
  .max(MAX_VOLUMES)
  .refine((vs) => new Set(vs.map((v) => v.target)).size === vs.length, 'two volumes at one target');

/** Placement labels: `key=value` pairs a runner carries and an environment or task may ask for. */
export const RunnerLabels = z
  .record(z.string().regex(/^[a-z0-9]([a-z0-9._\/-]{0,62})$/, 'label keys are lower-case letters, digits, dots, dashes, underscores and slashes, at most 63'), z.string().regex(/^[A-Za-z0-9._-]{0,63}$/, 'label values are at most 63 letters, digits, dots, dashes or underscores'))
  .refine((r) => Object.keys(r).length <= 32, 'at most 32 labels');
export type RunnerLabels = z.infer<typeof RunnerLabels>;

export const CreateEnvironmentBody = z.strictObject({
  name: z.string().regex(NAME_PATTERN, 'use lower-case letters, digits and dashes (at most 63), starting with a letter or digit').optional(),
  image: z.string().min(1).max(4096).optional().describe('image name, path to an OCI layout or docker-save tarball, or a registry reference'),
  project: z.string().min(1).max(100).optional().describe('project (name or id) whose secrets the environment receives'),
  cpus: z.number().positive().optional(),
  memory: size.optional(),
  disk: size.optional(),
  pids: z.number().int().positive().optional(),
  idleTimeout: duration.optional(),
  maxLifetime: duration.optional(),
  allowDomains: z.array(z.string().max(300)).max(1000).optional().describe("the environment's own egress allow list: a member's may only narrow its project's and org's policy, an admin's may widen it"),
  user: RunAsUser.optional().describe("who its commands run as: a user of its image (looked up in the environment's /etc/passwd) or a uid; its root when left out"),
  forwardPorts: ForwardPorts.optional().describe('ports it serves (a devcontainer\'s forwardPorts): recorded, not opened'),
  volumes: Volumes.optional().describe('named volumes: kept per project (per environment without one) and mounted at each target'),
  runnerLabels: RunnerLabels.optional().describe('labels the runner it goes to must carry (`{"gpu": "true"}`); it stays on that runner for life'),
});
export type CreateEnvironmentBody = z.infer<typeof CreateEnvironmentBody>;

/** A person Berth names: a user, or an org token with no maker (email null). */
export const Person = z.object({ id: z.string(), email: z.string().nullable(), name: z.string().nullable() });
export type Person = z.infer<typeof Person>;

export const Environment = z.object({
  id: z.string(),
  name: z.string(),
  image: z.string(),
  imageDigest: z.string().nullable(),
  projectId: z.string().nullable(),
  state: z.enum(ENVIRONMENT_STATES),
  stateReason: z.string().nullable(),
  limits: z.object({
    cpus: z.number(),
    memoryBytes: z.number(),
    diskBytes: z.number(),
    pidsLimit: z.number(),
    idleTimeoutMs: z.number().nullable(),
    maxLifetimeMs: z.number().nullable(),
  }),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  lastActiveAt: z.string().nullable(),
  user: z.string().nullable().describe('who its commands run as; its root when null'),
  forwardPorts: z.array(z.union([z.number(), z.string()])).describe('ports it serves (recorded from a devcontainer\'s forwardPorts; not opened)'),
  volumes: z.array(z.object({ name: z.string(), target: z.string() })).describe('named volumes mounted into it'),
  runnerId: z.string().nullable().describe('the runner it lives on, for life (its files are there); null for one made before runners could join (the local runner\'s)'),
  runnerName: z.string().nullable().describe('the name of the runner it lives on (`berth runner list`); null when not known'),
  snapshotId: z.string().nullable().describe('the snapshot it was made from (a fork, `--from`, a prebuild), if any'),
  pool: z.object({ projectId: z.string(), prebuildId: z.string().nullable() }).nullable().describe("set while it waits in a project's warm pool for a task to claim it (a null prebuildId: being removed); null otherwise"),
  owner: Person.nullable().describe("who it belongs to: its maker (an org token's maker), or for a task's environment the task's; null when not on record"),
  sharedWith: z.object({ org: z.boolean().describe('everyone in the org may use it'), users: z.array(Person) }).describe('who else may use it: `berth env share`'),
  mayUse: z.boolean().describe('the caller may run commands in it, copy files, start and stop it: its owner, an admin or owner of the org, or someone it is shared with (not a viewer)'),
  mayManage: z.boolean().describe('the caller may remove or share it: its owner, an admin or owner of the org (not someone it is shared with)'),
});
export type Environment = z.infer<typeof Environment>;

export const EnvironmentUsage = z.object({
  memoryBytes: z.number().nullable(),
  cpuSeconds: z.number().nullable(),
  pids: z.number().nullable(),
  diskBytes: z.number().nullable(),
  oomKills: z.number().nullable().describe("processes the kernel's OOM killer ended in the environment since it last started"),
});
export type EnvironmentUsage = z.infer<typeof EnvironmentUsage>;

export const ShareRef = EnvironmentRef.extend({
  grantee: z.string().min(1).max(320).describe("a member's email (or user id), or `org` for everyone in the org"),
});

export const EnvironmentDetail = Environment.extend({
  usage: EnvironmentUsage.nullable(),
  lastOomKillAt: z.string().nullable().describe('when a command last saw the OOM killer end a process in the environment'),
});
export type EnvironmentDetail = z.infer<typeof EnvironmentDetail>;

export const ListEnvironmentsQuery = z.strictObject({
  state: z.enum(ENVIRONMENT_STATES).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(200).optional().describe('the nextCursor of the previous page'),
  includeDeleted: z.enum(['true', 'false']).optional(),
});

export const EnvironmentList = z.object({
  items: z.array(Environment),
  nextCursor: z.string().nullable(),
});
export type EnvironmentList = z.infer<typeof EnvironmentList>;

const envVarName = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const ExecBody = z.strictObject({
  cmd: z.array(z.string().max(128 * 1024)).min(1).max(4096).describe('program and its arguments'),
  cwd: z.string().startsWith('/', 'must be an absolute path').max(4096).optional(),
  env: z
    .record(z.string().regex(envVarName, 'environment variable names are letters, digits and _'), z.string().max(128 * 1024))
    .optional(),
  timeout: duration.optional().describe('kill the command after this long (default 10m, at most 24d)'),
  stdin: z.string().max(16 * 1024 * 1024).optional().describe('text fed to the command on standard input'),
});
export type ExecBody = z.infer<typeof ExecBody>;

export const ExecResult = z.object({
  exitCode: z.number().int(),
  stdout: z.string().describe('at most 16 MiB, then the line "[berth: output truncated at 16 MiB]" (stream the output to see it all)'),
  stderr: z.string().describe('at most 16 MiB, as stdout'),
  durationMs: z.number(),
  timedOut: z.boolean(),
  oomKilled: z.boolean().describe("the kernel's OOM killer ended the command: it ran out of the environment's memory"),
  message: z.string().nullable().describe('what Berth says of how it ended, such as "killed: out of memory (limit 256m)"; null when nothing'),
});
export type ExecResult = z.infer<typeof ExecResult>;

/**
 * Set on a reply (exec, its stream, file copies) when the environment was stopped and
 * Berth started it to serve the call; its value is the environment's name. The attach
 * WebSocket says the same in a `{"type": "started", "environment": NAME}` text frame.
 */
export const STARTED_HEADER = 'x-berth-started';

/** An org's settings. */
export const OrgSettings = z.object({
  autoStart: z.boolean().describe('a stopped environment reached by exec, a terminal or a copy starts by itself (default true)'),
});
export type OrgSettings = z.infer<typeof OrgSettings>;
export const OrgSettingsPatch = z.strictObject({ autoStart: OrgSettings.shape.autoStart.optional() });
export type OrgSettingsPatch = z.infer<typeof OrgSettingsPatch>;

/** The first (text) frame a client sends on the attach WebSocket. */
export const AttachStart = ExecBody.omit({ stdin: true }).extend({
  type: z.literal('start'),
  tty: z.boolean().default(false),
  stdin: z.boolean().default(false).describe('the client will send standard input'),
  cols: z.number().int().min(1).max(1000).default(80),
  rows: z.number().int().min(1).max(1000).default(24),
});
export type AttachStart = z.infer<typeof AttachStart>;

export const AttachControl = z.discriminatedUnion('type', [
  z.object({ type: z.literal('resize'), cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }),
  z.object({ type: z.literal('eof') }),
  z.object({ type: z.literal('signal'), signal: z.enum(['SIGINT', 'SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGQUIT']) }),
]);
export type AttachControl = z.infer<typeof AttachControl>;

/** Binary frames on the attach WebSocket start with one byte naming the stream. */
export const STREAM = { stdin: 0, stdout: 1, stderr: 2 } as const;

export const FilesQuery = z.strictObject({
  path: z.string().startsWith('/', 'must be an absolute path').max(4096),
});

/** How people can sign in to this control plane: the sign-in page asks before it shows anything. */
export const AuthMethods = z.object({
  token: z.literal(true).describe('API tokens always work'),
  oidc: z.object({
    enabled: z.boolean().describe('sign-in with an identity provider is configured: GET /api/auth/oidc/start begins it'),
    name: z.string().optional().describe("the provider's name for the button (BERTH_OIDC_NAME)"),
  }),
});
export type AuthMethods = z.infer<typeof AuthMethods>;

export const Health = z.object({
  ok: z.boolean(),
  version: z.string(),
  database: z.enum(['pglite', 'postgres']),
  runtime: z.string(),
});

/** One entry of an org's audit log, as the API and its JSON Lines export give it. */
export const AuditEntry = z.object({
  orgId: z.string(),
  seq: z.number(),
  at: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string().nullable(),
  environmentId: z.string().nullable(),
  details: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});
export type AuditEntry = z.infer<typeof AuditEntry>;

/**
 * A signed point in an org's audit chain, for an outside system to keep: a later
 * `berth audit verify --since-checkpoint FILE` shows entries deleted or rewritten since. Files
 * hold it as `{"checkpoint": {...}}`.
 */
export const AuditCheckpoint = z.strictObject({
  org: z.string().max(100).describe('the org id'),
  seq: z.number().int().min(0).describe('the newest entry it covers'),
  hash: z.string().regex(/^[0-9a-f]{64}$/).describe("that entry's hash"),
  at: z.iso.datetime().describe('when it was signed'),
  hmac: z.string().regex(/^[0-9a-f]{64}$/).describe('HMAC-SHA256 under the audit key (BERTH_AUDIT_KEY)'),
});
export type AuditCheckpoint = z.infer<typeof AuditCheckpoint>;

/** One request an environment's egress proxy let through or refused, or packets its firewall refused, as the API and CLI show it. */
export const NetworkEventView = z.object({
  at: z.string(),
  kind: z.enum(['http', 'connect', 'firewall']),
  method: z.string().nullable(),
  host: z.string(),
  port: z.number(),
  path: z.string().nullable(),
  allowed: z.boolean(),
  rule: z.string(),
  status: z.number().nullable(),
  bytesUp: z.number(),
  bytesDown: z.number(),
  durationMs: z.number(),
  error: z.string().nullable(),
  packets: z.number().nullable().describe('firewall events: packets refused to this destination (the protocol is in method)'),
});
export type NetworkEventView = z.infer<typeof NetworkEventView>;

/** One scope's stored egress policy; a null field is inherited from the wider scope. */
const PolicyFields = {
  allowDomains: z.array(z.string()).nullable(),
  presets: z.array(z.string()).nullable(),
  allowPorts: z.array(z.number()).nullable(),
  allowMethods: z.array(z.string()).nullable(),
  maxConnections: z.number().nullable(),
  mirrors: z.record(z.string(), z.object({ url: z.string(), secret: z.string().nullable() })).nullable().describe('package mirrors set here, by ecosystem (org and projects only)'),
};
export const PolicyView = z.object({
  scope: z.enum(['org', 'project', 'environment']),
  target: z.string().nullable(),
  ...PolicyFields,
  updatedAt: z.string(),
  updatedBy: z.string(),
  setByRole: z.enum(['viewer', 'member', 'admin', 'owner']).describe('the role that set it: a lower role may only narrow it further'),
});
export const EffectivePolicy = z.object({
  allowDomains: z.array(z.string()),
  presets: z.array(z.string()),
  allowPorts: z.array(z.number()).nullable(),
  allowMethods: z.array(z.string()).nullable(),
  maxConnections: z.number(),
  credentials: z.array(z.object({ name: z.string(), host: z.string(), pathPrefix: z.string(), header: z.string() })),
  mirrors: z.array(z.object({ ecosystem: z.string(), url: z.string(), secret: z.string().nullable(), scope: z.string().describe("who set it: 'org' or 'project:NAME'") }))
    .describe("package mirrors environments here are pointed at (npm, pip, Go, cargo, Maven, apt); their hosts are allowed, and a mirror's secret is added by the egress proxy"),
  scope: z.string(),
});
export type PolicyView = z.infer<typeof PolicyView>;
export type EffectivePolicy = z.infer<typeof EffectivePolicy>;

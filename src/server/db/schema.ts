import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely';
import type { EnvironmentState } from '../../shared/environment.ts';
import type { PrebuildSettings } from '../../shared/prebuilds.ts';
import type { CacheKind } from '../../shared/caches.ts';
import type { ForgeSettings } from '../../forges/index.ts';
import type { OneOffForge } from '../../shared/api-tasks.ts';
import type { ProjectWorkSettings } from '../tasks/repo-config.ts';
import type { RunnerReport } from '../../shared/api-runners.ts';
import type { MirrorMap } from '../policy/mirrors.ts';
import type { ModelProvider, ModelScope, ModelSource } from '../../shared/api-models.ts';
import type { CampaignSettings, CampaignState, FailureKind, TargetState } from '../../shared/api-campaigns.ts';
import type { AgentKind, ChangeRequest, TaskBudget, TaskEventData, TaskState, TaskStep } from '../../shared/tasks.ts';


// Timestamps are stored as timestamptz and read back as Date on both PGlite and pg.
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamp the database fills in on insert. */
type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;

export interface OrgTable {
  id: string;
  name: string;
  created_at: CreatedAt;
  /** A stopped environment reached by exec, a terminal or a copy starts by itself (default true). */
  auto_start: ColumnType<boolean, boolean | undefined, boolean>;
}

export type Role = 'owner' | 'admin' | 'member' | 'viewer';

export interface TokenTable {
  id: string;
  /** 'org': acts in org_id with role; 'user': acts as user_id with the user's memberships. */
  kind: ColumnType<'org' | 'user', 'org' | 'user' | undefined, never>;
  org_id: string | null;
  user_id: string | null;
  name: string;
  /** sha256 of the token; the token itself is shown once and never stored. */
  hash: string;
  role: Role | null;
  created_at: CreatedAt;
  expires_at: Timestamp | null;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

export interface UserTable {
  id: string;
  email: string;
  name: string;
  oidc_issuer: string | null;
  oidc_subject: string | null;
  created_at: CreatedAt;
  disabled_at: Timestamp | null;
  instance_admin: ColumnType<boolean, boolean | undefined, boolean>;
}

export interface MembershipTable {
  org_id: string;
  user_id: string;
  role: Role;
  created_at: CreatedAt;
}

export interface ProjectTable {
  id: string;
  org_id: string;
  name: string;
  repo_url: string | null;
  default_branch: ColumnType<string, string | undefined, string>;
  settings: ColumnType<ProjectSettings, string | undefined, string>;
  created_at: CreatedAt;
  /** Set when the project was removed while tasks still refer to it: gone from lists and lookups by name. */
  archived_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ProjectSettings {
  /**
   * Names of the org's secrets an environment of this project receives; with the secrets set
   * for the project itself, that is all it receives (secrets/service.ts receivesSecret).
   */
  secrets?: { name: string; as: 'env' | 'file'; path?: string }[];
  /** How to work on the repository (image, setup, check…): overrides its berth.yaml or devcontainer.json. */
  work?: ProjectWorkSettings;
  /** Which forge hosts the repository and the names of the secrets that hold its credentials. */
  forge?: ForgeSettings;
  /** Defaults for the project's tasks. */
  agent?: { kind?: AgentKind; model?: string; command?: string };
  /**
   * Logins for the registries its environments' images come from: registry (`ghcr.io`,
   * `host:port`) → name of the secret holding USER:PASSWORD. Used on the runner only.
   */
  registryLogins?: Record<string, string>;
  /** Labels the runner of its tasks must carry (`gpu` → `true`); a task's own labels add to them. */
  runnerLabels?: Record<string, string>;
  /** Package caches its environments mount (runner/caches.ts); none when absent. */
  caches?: CacheKind[];
  /** When its prebuilds are made and how many are kept (server/prebuilds). */
  prebuild?: PrebuildSettings;
  /** Environments kept started from its newest prebuild for tasks to claim (prebuilds/warm-pool.ts); none when absent. */
  warm?: number;
}

export interface SecretTable {
  id: string;
  org_id: string;
  project_id: string | null;
  name: string;
  /** base64 of iv (12 bytes) | tag (16 bytes) | ciphertext: AES-256-GCM. */
  ciphertext: string;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  updated_by: string;
  /** Set for an egress-only secret: never an environment variable, added by the egress proxy to requests to this host. */
  egress_host: ColumnType<string | null, string | null | undefined, string | null>;
  egress_path_prefix: ColumnType<string | null, string | null | undefined, string | null>;
  egress_header: ColumnType<string | null, string | null | undefined, string | null>;
  /** The header value around the secret: 'Bearer {value}'. */
  egress_format: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface AuditEntryTable {
  org_id: string;
  seq: ColumnType<string, string | number, never>;
  at: Timestamp;
  /** Who: 'user:<id>', 'token:<id>', 'environment:<id>' or 'system'. */
  actor: string;
  /** What, as noun.verb: 'environment.create', 'command.run', 'secret.read', 'auth.sign_in'. */
  action: string;
  target: string | null;
  environment_id: string | null;
  details: ColumnType<Record<string, unknown>, string, never>;
  prev_hash: string;
  hash: string;
}

export interface AuditHeadTable {
  org_id: string;
  seq: ColumnType<string, string | number, string | number>;
  hash: string;
  /** HMAC of (org, seq, hash) under the audit key; null for a head nobody holding the key vouched for. */
  mac: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface EnvironmentTable {
  id: string;
  org_id: string;
  project_id: ColumnType<string | null, string | null | undefined, string | null>;
  name: string;
  image: string;
  image_digest: string | null;
  state: EnvironmentState;
  /** Why the environment is in its state, when that is not obvious (failed, stopped by idle timeout). */
  state_reason: string | null;
  cpus: number;
  memory_bytes: string; // bigint travels as string
  disk_bytes: string;
  pids_limit: number;
  idle_timeout_ms: string | null;
  max_lifetime_ms: string | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  started_at: Timestamp | null;
  last_active_at: Timestamp | null;
  /** Who it belongs to (server/ownership.ts): a user id, or an org token's id when the token has no maker; null when not on record. */
  owner_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The task that made it, for a task's environment. */
  task_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** When a command last saw the OOM killer end a process in it. */
  last_oom_kill_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** Who its commands run as: a user name of its image or a uid; its root when null. */
  run_as: ColumnType<string | null, string | null | undefined, string | null>;
  /** Ports it serves (a devcontainer's forwardPorts): recorded, not opened. */
  forward_ports: ColumnType<(number | string)[], string | undefined, string>;
  /** Named volumes mounted into it: [{ name, target }]. */
  volumes: ColumnType<{ name: string; target: string }[], string | undefined, string>;
  /** The runner it lives on (runners.id); null for one made before runners could join (the local runner's). */
  runner_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The snapshot it was made from (a fork, `--from`, a prebuild's or a warm pool's). */
  snapshot_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** A warm pool's environment not claimed yet: the project it waits for a task of, and the prebuild it holds. */
  pool_project_id: ColumnType<string | null, string | null | undefined, string | null>;
  pool_prebuild_id: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Who else may use an environment besides its owner and the org's admins and owners. */
export interface EnvironmentShareTable {
  environment_id: string;
  org_id: string;
  /** A user's id, or 'org' for everyone in the org. */
  grantee: string;
  /** The audit actor who shared it. */
  created_by: string;
  created_at: CreatedAt;
}

export interface TaskTable {
  id: string;
  org_id: string;
  project_id: string | null;
  repo_url: string;
  /** The branch the work starts from and the pull request targets; the remote's default when null. */
  base_branch: string | null;
  goal: string;
  agent: AgentKind;
  command: string | null;
  /** The model asked for (the task's, else its project's); for a built-in agent task that asked for none, the default it started with. */
  model: string | null;
  /** Whether `model` is the runner's default (BERTH_MODEL), written when the task started. */
  model_default: ColumnType<boolean, boolean | undefined, boolean>;
  /** The provider of the model settings the task started with (models/resolve.ts). */
  model_provider: ColumnType<ModelProvider | null, ModelProvider | null | undefined, ModelProvider | null>;
  /** Who named the model: the task, its project, the org or the instance (BERTH_MODEL). */
  model_source: ColumnType<ModelSource | null, ModelSource | null | undefined, ModelSource | null>;
  /** Whose provider, base URL and key it used: the project's, the org's or the instance's (berth up's environment). */
  model_settings: ColumnType<ModelScope | null, ModelScope | null | undefined, ModelScope | null>;
  budget: ColumnType<TaskBudget, string, string>;
  check_command: string | null;
  /** Setup commands given with the task, run after the repository's and the project's. */
  setup_commands: ColumnType<string[] | null, string | null | undefined, string | null>;
  state: TaskState;
  state_reason: string | null;
  step: TaskStep | null;
  trigger: ColumnType<string, string | undefined, string>;
  /** Audit actor of whoever asked for the task. */
  created_by: string;
  /** Who the task (and its environment) belongs to: as EnvironmentTable.owner_id. */
  owner_id: ColumnType<string | null, string | null | undefined, string | null>;
  runner_id: string | null;
  /** Which claim of the task is current: each claim takes the next; a write from an older one is refused. */
  lease: ColumnType<number, number | undefined, number>;
  /** Labels the runner that claims it must carry (the task's and its project's). */
  runner_labels: ColumnType<Record<string, string>, string | undefined, string>;
  /** Memory its environment is expected to take: a runner claims it only with this much free. Null: the default limit. */
  memory_bytes: ColumnType<string | null, string | number | null | undefined, string | number | null>;
  /** Times it was started over because its runner went offline under it. */
  attempts: ColumnType<number, number | undefined, number>;
  environment_id: string | null;
  branch: string | null;
  base_sha: string | null;
  head_sha: string | null;
  change_request: ColumnType<ChangeRequest | null, string | null, string | null>;
  checks_passed: boolean | null;
  summary: string | null;
  /** The change as a unified diff (capped), shown by `berth task diff` and the web UI. */
  diff: string | null;
  input_tokens: ColumnType<string, string | number | undefined, string | number>;
  output_tokens: ColumnType<string, string | number | undefined, string | number>;
  cost_usd: ColumnType<number, number | undefined, number>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  /** Who or what outside Berth started it: `github:LOGIN`, `gitlab:USERNAME`, `slack:TEAM/USER`, `schedule:sch_…`, `webhook:whk_…`. */
  triggered_by: ColumnType<string | null, string | null | undefined, string | null>;
  /** What it was started for, unique: `github:DELIVERY`, `schedule:sch_…@SLOT`; a second start for the same is the first task. */
  trigger_key: ColumnType<string | null, string | null | undefined, string | null>;
  /** Where its progress is told (an issue comment, a Slack thread): triggers/replies.ts. */
  reply_to: ColumnType<ReplyTarget | null, string | null | undefined, string | null>;
  /** The state the reply last told; differs from `state` while a reply is owed. */
  replied_state: ColumnType<string | null, string | null | undefined, string | null>;
  /** The task whose branch it pushes to and whose change request it updates (a review asking for changes). */
  continues_task_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The branch it pushes to when it is not its own (`berth/task_…`): a campaign's, shared by its runs. */
  work_branch: ColumnType<string | null, string | null | undefined, string | null>;
  /** The attempt it retries: a push that attempt made before it was stopped is adopted (tasks/pipeline.ts). */
  retries_task_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** A one-off task's own settings, what a project's would give it (a transient project): image, egress domains, forge token. */
  one_off: ColumnType<OneOffSettings | null, string | null | undefined, string | null>;
}

/** A one-off task's transient project (CreateTaskBody's image, allowDomains, forge), as stored. */
export interface OneOffSettings {
  image?: string;
  allowDomains?: string[];
  forge?: OneOffForge;
}

/**
 * Where a triggered task tells of its progress. `kind` picks the replier (triggers/replies.ts);
 * the rest is the replier's own, written back as it learns more (the comment it made).
 */
export interface ReplyTarget {
  kind: 'github' | 'gitlab' | 'slack';
  [key: string]: unknown;
}

export interface TaskEventTable {
  task_id: string;
  seq: number;
  at: CreatedAt;
  data: ColumnType<TaskEventData, string, never>;
}

export type PolicyScopeKind = 'org' | 'project' | 'environment';

/** One scope's egress policy; a null field is not set here and comes from the next wider scope. */
export interface NetworkPolicyTable {
  org_id: string;
  scope_kind: PolicyScopeKind;
  /** The org's, project's or environment's id. */
  scope_id: string;
  allow_domains: ColumnType<string[] | null, string | null, string | null>;
  presets: ColumnType<string[] | null, string | null, string | null>;
  allow_ports: ColumnType<number[] | null, string | null, string | null>;
  allow_methods: ColumnType<string[] | null, string | null, string | null>;
  max_connections: number | null;
  /** Package mirrors set here, by ecosystem (policy/mirrors.ts); null: none. */
  mirrors: ColumnType<MirrorMap | null, string | null | undefined, string | null>;
  updated_at: CreatedAt;
  updated_by: string;
  /** The role that set it: widening or removing it needs at least this role. */
  set_by_role: ColumnType<Role, Role | undefined, Role>;
}

export interface NetworkEventTable {
  id: ColumnType<string, never, never>;
  org_id: string;
  environment_id: string;
  at: Timestamp;
  kind: 'http' | 'connect' | 'firewall';
  host: string;
  port: number;
  method: string | null;
  path: string | null;
  allowed: boolean;
  rule: string;
  status: number | null;
  bytes_up: ColumnType<string, number, never>;
  bytes_down: ColumnType<string, number, never>;
  duration_ms: number;
  error: string | null;
  /** Firewall events: packets refused to this destination (null for the proxy's requests). */
  packets: number | null;
}

/** One runner as it last reported itself (its heartbeat). */
export interface RunnerTable {
  /** The id its tasks carry in tasks.runner_id. */
  id: string;
  name: string;
  host: string;
  version: string;
  report: ColumnType<RunnerReport, string, string>;
  started_at: Timestamp;
  heartbeat_at: Timestamp;
  /** Set when the runner shut down cleanly; a later start clears it. */
  stopped_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** Placement labels (`gpu` → `true`). */
  labels: ColumnType<Record<string, string>, string | undefined, string>;
  /** No new environments or tasks go to it; what runs there finishes. */
  draining: ColumnType<boolean, boolean | undefined, boolean>;
  /** When the runner sweep found its heartbeat stopped (its environments became lost); cleared by its next heartbeat. */
  offline_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** A joined runner's: the runner token it first registered with (null for berth up's own). */
  token_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The internal URL of the replica that holds it now; other replicas reach it through that one's relay. */
  replica_url: ColumnType<string | null, string | null | undefined, string | null>;
}

/** A token a runner on another host joins with (only its hash is kept). */
export interface RunnerTokenTable {
  id: string;
  hash: string;
  /** Labels every runner joining with it gets (its own --labels add to them). */
  labels: ColumnType<Record<string, string>, string | undefined, string>;
  created_by: string;
  created_at: CreatedAt;
  last_used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  name: ColumnType<string | null, string | null | undefined, string | null>;
}

/** An org's (project_id null) or a project's model settings; the key is the secret named key_secret. */
export interface ModelTable {
  id: string;
  org_id: string;
  project_id: string | null;
  provider: ModelProvider;
  base_url: string;
  key_secret: string;
  model: string;
  updated_at: CreatedAt;
  updated_by: string;
}

/** A one-time invite link: its code is kept only as a hash; used once, and not after expires_at. */
export interface InviteTable {
  id: string;
  org_id: string;
  user_id: string;
  hash: string;
  /** The actor who made it (`user:usr_…`, `token:tok_…`). */
  created_by: string;
  created_at: CreatedAt;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

export interface Database {
  invites: InviteTable;
  models: ModelTable;
  orgs: OrgTable;
  users: UserTable;
  memberships: MembershipTable;
  tokens: TokenTable;
  projects: ProjectTable;
  secrets: SecretTable;
  audit_entries: AuditEntryTable;
  audit_heads: AuditHeadTable;
  environments: EnvironmentTable;
  environment_shares: EnvironmentShareTable;
  tasks: TaskTable;
  task_events: TaskEventTable;
  network_policies: NetworkPolicyTable;
  network_events: NetworkEventTable;
  runners: RunnerTable;
  runner_tokens: RunnerTokenTable;
  webhook_deliveries: WebhookDeliveryTable;
  integrations: IntegrationTable;
  schedules: ScheduleTable;
  schedule_firings: ScheduleFiringTable;
  webhook_triggers: WebhookTriggerTable;
  snapshots: SnapshotTable;
  prebuilds: PrebuildTable;
  campaigns: CampaignTable;
  campaign_targets: CampaignTargetTable;
}

export type SnapshotKind = 'manual' | 'fork' | 'prebuild';
export type SnapshotState = 'creating' | 'ready' | 'failed' | 'deleting';

/** An environment's files frozen on its runner (runner/store.ts, server/snapshots). */
export interface SnapshotTable {
  id: string;
  org_id: string;
  name: string;
  kind: SnapshotKind;
  state: SnapshotState;
  state_reason: ColumnType<string | null, string | null | undefined, string | null>;
  /** The environment it froze (it may since have been removed). */
  environment_id: ColumnType<string | null, string | null | undefined, string | null>;
  project_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** It lives on this runner: environments made from it go there. */
  runner_id: string;
  image: string;
  image_digest: string | null;
  /** Bytes it references (what it holds, shared or not); null until counted. */
  bytes: ColumnType<string | null, string | null | undefined, string | null>;
  /** Its files were copied (an environment kept outside the runner's state store) rather than frozen in place. */
  copied: ColumnType<boolean, boolean | undefined, boolean>;
  /** How long a running environment was paused for it. */
  paused_ms: ColumnType<number | null, number | null | undefined, number | null>;
  /** The audit actor who made it (a user, a token, `system` for a prebuild). */
  created_by: string;
  created_at: CreatedAt;
  deleted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export type PrebuildState = 'queued' | 'building' | 'ready' | 'failed' | 'expired';
export type PrebuildTrigger = 'manual' | 'schedule' | 'push';

/** One prebuild of a project: its repository cloned at a commit and set up, then snapshotted (server/prebuilds). */
export interface PrebuildTable {
  id: string;
  org_id: string;
  project_id: string;
  state: PrebuildState;
  trigger: PrebuildTrigger;
  branch: ColumnType<string | null, string | null | undefined, string | null>;
  commit_sha: ColumnType<string | null, string | null | undefined, string | null>;
  /** A hash of what the setup depends on (image, setup steps): a task whose spec differs does not use it. */
  spec_key: ColumnType<string | null, string | null | undefined, string | null>;
  snapshot_id: ColumnType<string | null, string | null | undefined, string | null>;
  runner_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The environment it was built in (removed once snapshotted). */
  environment_id: ColumnType<string | null, string | null | undefined, string | null>;
  state_reason: ColumnType<string | null, string | null | undefined, string | null>;
  /** The last lines of its setup's output, for `berth project show` and the web UI. */
  log: ColumnType<string[], string | undefined, string>;
  created_by: string;
  /** The replica building it and when it last said so: one that stops saying so has died. */
  claimed_by: ColumnType<string | null, string | null | undefined, string | null>;
  heartbeat_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: CreatedAt;
  started_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** One webhook delivery, written before it is acted on (triggers/deliveries.ts). */
export interface WebhookDeliveryTable {
  /** 'github', 'gitlab', 'slack', or `webhook:whk_…` for a generic trigger. */
  source: string;
  delivery_id: string;
  event: string;
  /** Kept until processed, so a delivery a crash interrupted is taken up again; cleared after. */
  payload: ColumnType<unknown, string | null | undefined, string | null>;
  received_at: CreatedAt;
  processed_at: Timestamp | null;
  /** What came of it, in words: `task task_… queued`, `ignored: …`, `refused: …`. */
  outcome: string | null;
  org_id: string | null;
  task_id: string | null;
}

export type IntegrationKind = 'github' | 'gitlab' | 'slack';

/** The instance's GitHub App, GitLab or Slack app (triggers/integrations.ts). */
export interface IntegrationTable {
  kind: IntegrationKind;
  settings: ColumnType<Record<string, unknown>, string, string>;
  /** A JSON object of secret values, sealed with the instance's secret key. */
  secrets: string;
  updated_by: string;
  updated_at: CreatedAt;
}

export interface ScheduleTable {
  id: string;
  org_id: string;
  /** 'task': starts a task on a project; 'environment': stops or starts an environment. */
  kind: 'task' | 'environment';
  name: string | null;
  cron: string;
  /** An IANA zone: the cron rule is read in it, daylight-saving changes included. */
  timezone: string;
  project_id: string | null;
  environment_id: string | null;
  /** Environment schedules: 'start' or 'stop'. */
  action: 'start' | 'stop' | null;
  /** Task schedules: the task to create (goal, agent, command, check, budget…). */
  task: ColumnType<Record<string, unknown> | null, string | null | undefined, string | null>;
  paused: ColumnType<boolean, boolean | undefined, boolean>;
  created_by: string;
  owner_id: string | null;
  created_at: CreatedAt;
  /** The next slot to fire; null when paused or when the rule has no more. */
  next_at: Timestamp | null;
  /** The last slot fired (or skipped as missed). */
  last_slot: Timestamp | null;
  deleted_at: Timestamp | null;
}

export interface ScheduleFiringTable {
  schedule_id: string;
  slot: Timestamp;
  fired_at: CreatedAt;
  /** `task task_… queued`, `environment stopped`, `failed: …`. */
  outcome: string;
  task_id: string | null;
}

export interface WebhookTriggerTable {
  id: string;
  org_id: string;
  name: string;
  project_id: string;
  /** The goal, with `{{body.path}}`, `{{headers.name}}` filled from the delivery. */
  goal_template: string;
  /** How a sender proves itself: 'bearer' (the token) or 'hmac' (X-Berth-Signature-256: sha256=HMAC of the body). */
  auth: 'bearer' | 'hmac';
  /** The token, sealed with the instance's secret key. */
  secret: string;
  rate_per_minute: number;
  created_by: string;
  owner_id: string | null;
  created_at: CreatedAt;
  deleted_at: Timestamp | null;
}

export type EnvironmentRow = Selectable<EnvironmentTable>;
export type NewEnvironmentRow = Insertable<EnvironmentTable>;
export type EnvironmentUpdate = Updateable<EnvironmentTable>;
export type TokenRow = Selectable<TokenTable>;
export type UserRow = Selectable<UserTable>;
export type ProjectRow = Selectable<ProjectTable>;
export type SecretRow = Selectable<SecretTable>;
export type AuditEntryRow = Selectable<AuditEntryTable>;
export type TaskRow = Selectable<TaskTable>;
export type ModelRow = Selectable<ModelTable>;
export type TaskUpdate = Updateable<TaskTable>;

/** One change across many repositories (server/campaigns). */
export interface CampaignTable {
  id: string;
  org_id: string;
  name: string;
  goal: string;
  state: CampaignState;
  settings: ColumnType<CampaignSettings, string, string>;
  created_by: string;
  /** The user whose rights its tasks run with (its creator), null for an org token's. */
  owner_id: string | null;
  run: ColumnType<number, number | undefined, number>;
  /** The forge rate: its next call to a forge (a start on a hosted repository, an approval, a read) waits for this (campaigns/pacing.ts). */
  next_start_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** When a replica last took the reading of its change requests (forge.ts): one reading per period across replicas. */
  refreshed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  peak_running: ColumnType<number, number | undefined, number>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** One repository of a campaign and what became of it. */
export interface CampaignTargetTable {
  id: string;
  campaign_id: string;
  /** Its line's order in the list: targets start in that order. */
  seq: number;
  repo: string;
  /** repoKey(repo): one target per repository however it was written. */
  repo_key: string;
  project_id: string | null;
  state: TargetState;
  attempts: ColumnType<number, number | undefined, number>;
  task_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The task that opened its branch and change request: later runs continue it. */
  first_task_id: ColumnType<string | null, string | null | undefined, string | null>;
  failure: ColumnType<FailureKind | null, FailureKind | null | undefined, FailureKind | null>;
  reason: ColumnType<string | null, string | null | undefined, string | null>;
  change_request: ColumnType<ChangeRequest | null, string | null | undefined, string | null>;
  pr_state: ColumnType<string | null, string | null | undefined, string | null>;
  pr_checks: ColumnType<string | null, string | null | undefined, string | null>;
  pr_review: ColumnType<string | null, string | null | undefined, string | null>;
  refreshed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  started_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  updated_at: CreatedAt;
}

export type CampaignRow = Selectable<CampaignTable>;
export type CampaignTargetRow = Selectable<CampaignTargetTable>;

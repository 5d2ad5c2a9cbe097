import { type Kysely, sql } from 'kysely';
import type { Migration } from 'kysely/migration';

// Migrations live in code, in order, and are never edited once released: one SQL
// dialect (PostgreSQL) serves both PGlite and a PostgreSQL server.
export const migrations: Record<string, Migration> = {
  '0001_foundation': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('orgs')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();

      await db.schema
        .createTable('tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull().unique())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('expires_at', 'timestamptz')
        .addColumn('last_used_at', 'timestamptz')
        .addColumn('revoked_at', 'timestamptz')
        .execute();

      await db.schema
        .createTable('environments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('image', 'text', (c) => c.notNull())
        .addColumn('image_digest', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('cpus', 'real', (c) => c.notNull())
        .addColumn('memory_bytes', 'bigint', (c) => c.notNull())
        .addColumn('disk_bytes', 'bigint', (c) => c.notNull())
        .addColumn('pids_limit', 'integer', (c) => c.notNull())
        .addColumn('idle_timeout_ms', 'bigint')
        .addColumn('max_lifetime_ms', 'bigint')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('started_at', 'timestamptz')
        .addColumn('last_active_at', 'timestamptz')
        .execute();

      // Names are unique among the environments that still exist; a deleted one frees its name.
      await sql`create unique index environments_org_name on environments (org_id, name) where state <> 'deleted'`.execute(db);
      await sql`create index environments_org_created on environments (org_id, created_at desc, id)`.execute(db);
    },
  },
  '0002_teams': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('email', 'text', (c) => c.notNull().unique())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('oidc_issuer', 'text')
        .addColumn('oidc_subject', 'text')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('disabled_at', 'timestamptz')
        // May manage what belongs to the whole installation (images, orgs of others).
        .addColumn('instance_admin', 'boolean', (c) => c.notNull().defaultTo(false))
        .addUniqueConstraint('users_oidc', ['oidc_issuer', 'oidc_subject'])
        .execute();

      await db.schema
        .createTable('memberships')
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('memberships_pk', ['org_id', 'user_id'])
        .execute();

      // A token acts either for a user (in every org the user belongs to, with the user's
      // roles) or for one org with a fixed role; org tokens name the user who made them.
      await db.schema.alterTable('tokens').addColumn('user_id', 'text', (c) => c.references('users.id')).execute();
      await db.schema.alterTable('tokens').addColumn('kind', 'text', (c) => c.notNull().defaultTo('org')).execute();
      await db.schema.alterTable('tokens').alterColumn('org_id', (c) => c.dropNotNull()).execute();
      await db.schema.alterTable('tokens').alterColumn('role', (c) => c.dropNotNull()).execute();

      await db.schema
        .createTable('projects')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('repo_url', 'text')
        .addColumn('default_branch', 'text', (c) => c.notNull().defaultTo('main'))
        .addColumn('settings', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addUniqueConstraint('projects_org_name', ['org_id', 'name'])
        .execute();
      await db.schema.alterTable('environments').addColumn('project_id', 'text', (c) => c.references('projects.id')).execute();

      // Secret values are AES-256-GCM ciphertext; the name and scope are plain.
      await db.schema
        .createTable('secrets')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('project_id', 'text', (c) => c.references('projects.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('ciphertext', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_by', 'text', (c) => c.notNull())
        .execute();
      await sql`create unique index secrets_scope_name on secrets (org_id, coalesce(project_id, ''), name)`.execute(db);

      // The audit log: append-only, each entry chained to the one before it in its org.
      await db.schema
        .createTable('audit_entries')
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('at', 'timestamptz', (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('target', 'text')
        .addColumn('environment_id', 'text')
        .addColumn('details', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('audit_entries_pk', ['org_id', 'seq'])
        .execute();
      await sql`create index audit_entries_org_at on audit_entries (org_id, at)`.execute(db);
      // The head of each org's chain; appends lock it, so the chain stays a line.
      await db.schema
        .createTable('audit_heads')
        .addColumn('org_id', 'text', (c) => c.primaryKey().references('orgs.id'))
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0003_list_order': {
    async up(db: Kysely<any>) {
      // Listing walks (created_at desc, id desc): an index in exactly that order lets a
      // page be read without sorting the org's environments.
      await sql`drop index environments_org_created`.execute(db);
      await sql`create index environments_org_created on environments (org_id, created_at desc, id desc)`.execute(db);
    },
  },
  '0004_tasks': {
    async up(db: Kysely<any>) {
      // A task row is written (and its state changed) before anything acts on it, so a
      // restarted process can tell what was under way; events are its transcript.
      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('project_id', 'text', (c) => c.references('projects.id'))
        .addColumn('repo_url', 'text', (c) => c.notNull())
        .addColumn('base_branch', 'text')
        .addColumn('goal', 'text', (c) => c.notNull())
        .addColumn('agent', 'text', (c) => c.notNull())
        .addColumn('command', 'text')
        .addColumn('model', 'text')
        .addColumn('budget', 'jsonb', (c) => c.notNull())
        .addColumn('check_command', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('step', 'text')
        .addColumn('trigger', 'text', (c) => c.notNull().defaultTo('api'))
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('runner_id', 'text')
        .addColumn('environment_id', 'text')
        .addColumn('branch', 'text')
        .addColumn('base_sha', 'text')
        .addColumn('head_sha', 'text')
        .addColumn('change_request', 'jsonb')
        .addColumn('checks_passed', 'boolean')
        .addColumn('summary', 'text')
        .addColumn('diff', 'text')
        .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('cost_usd', 'double precision', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('started_at', 'timestamptz')
        .addColumn('finished_at', 'timestamptz')
        .execute();
      await sql`create index tasks_org_created on tasks (org_id, created_at desc, id desc)`.execute(db);
      // The queue: the oldest queued task first.
      await sql`create index tasks_queued on tasks (created_at, id) where state = 'queued'`.execute(db);

      await db.schema
        .createTable('task_events')
        .addColumn('task_id', 'text', (c) => c.notNull().references('tasks.id'))
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('data', 'jsonb', (c) => c.notNull())
        .addPrimaryKeyConstraint('task_events_pk', ['task_id', 'seq'])
        .execute();
    },
  },
  '0005_network': {
    async up(db: Kysely<any>) {
      // One egress policy per scope: the org (scope_id = org id), a project or an
      // environment. A null field is "not set here": the next wider scope's applies.
      await db.schema
        .createTable('network_policies')
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('scope_kind', 'text', (c) => c.notNull())
        .addColumn('scope_id', 'text', (c) => c.notNull())
        .addColumn('allow_domains', 'jsonb')
        .addColumn('presets', 'jsonb')
        .addColumn('allow_ports', 'jsonb')
        .addColumn('allow_methods', 'jsonb')
        .addColumn('max_connections', 'integer')
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_by', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('network_policies_pk', ['org_id', 'scope_kind', 'scope_id'])
        .execute();

      // What each environment's egress proxy let through or refused; written in batches.
      await db.schema
        .createTable('network_events')
        .addColumn('id', 'bigserial', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull())
        .addColumn('environment_id', 'text', (c) => c.notNull())
        .addColumn('at', 'timestamptz', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('host', 'text', (c) => c.notNull())
        .addColumn('port', 'integer', (c) => c.notNull())
        .addColumn('method', 'text')
        .addColumn('path', 'text')
        .addColumn('allowed', 'boolean', (c) => c.notNull())
        .addColumn('rule', 'text', (c) => c.notNull())
        .addColumn('status', 'integer')
        .addColumn('bytes_up', 'bigint', (c) => c.notNull())
        .addColumn('bytes_down', 'bigint', (c) => c.notNull())
        .addColumn('duration_ms', 'integer', (c) => c.notNull())
        .addColumn('error', 'text')
        .execute();
      await sql`create index network_events_env_at on network_events (environment_id, at desc, id desc)`.execute(db);

      // Egress-only secrets never enter an environment: the proxy adds them to requests
      // to one host (and path prefix), in one header, formatted around {value}.
      await db.schema.alterTable('secrets').addColumn('egress_host', 'text').execute();
      await db.schema.alterTable('secrets').addColumn('egress_path_prefix', 'text').execute();
      await db.schema.alterTable('secrets').addColumn('egress_header', 'text').execute();
      await db.schema.alterTable('secrets').addColumn('egress_format', 'text').execute();
    },
  },
  '0006_network_event_packets_and_age': {
    async up(db: Kysely<any>) {
      // What the namespace's rules refused is recorded per destination, with a packet count.
      await db.schema.alterTable('network_events').addColumn('packets', 'integer').execute();
      // The retention sweep deletes the oldest rows in batches: found by age, not by a scan.
      await sql`create index network_events_at on network_events (at)`.execute(db);
    },
  },
  '0007_runners': {
    async up(db: Kysely<any>) {
      // Each runner writes its report here every few seconds (its heartbeat); the control
      // plane lists them, and one whose heartbeat stopped is shown offline.
      await db.schema
        .createTable('runners')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('host', 'text', (c) => c.notNull())
        .addColumn('version', 'text', (c) => c.notNull())
        .addColumn('report', 'jsonb', (c) => c.notNull())
        .addColumn('started_at', 'timestamptz', (c) => c.notNull())
        .addColumn('heartbeat_at', 'timestamptz', (c) => c.notNull())
        .addColumn('stopped_at', 'timestamptz')
        .execute();
      // A built-in agent task that named no model gets the runner's default (BERTH_MODEL)
      // written into model when it starts; this says the model came from there, so a
      // retry follows the default of its own day.
      await db.schema.alterTable('tasks').addColumn('model_default', 'boolean', (c) => c.notNull().defaultTo(false)).execute();
    },
  },
  '0008_audit_head_mac': {
    async up(db: Kysely<any>) {
      // Each org's chain head is signed with the audit key, which the database does not hold
      // (audit/key.ts). Heads written before are left unsigned: `berth audit verify` says so
      // until they are signed (on the start that creates the key file, or by `berth audit reseal`).
      await db.schema.alterTable('audit_heads').addColumn('mac', 'text').execute();
    },
  },
  '0009_policy_set_by_role': {
    async up(db: Kysely<any>) {
      // The role that last set a scope's egress policy: widening or removing it needs that role
      // (policy/service.ts). Rows from before are taken as an admin's, the safe side: a member
      // may still narrow them, and an admin can do the rest.
      await db.schema.alterTable('network_policies').addColumn('set_by_role', 'text', (c) => c.notNull().defaultTo('admin')).execute();
    },
  },
  '0010_models': {
    async up(db: Kysely<any>) {
      // The model an org's or a project's tasks use instead of the instance default: the
      // provider, its base URL, the model, and the NAME of the secret holding the key (the
      // key itself stays in secrets, sealed). One row per org (project_id null) and per project.
      await db.schema
        .createTable('models')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('project_id', 'text', (c) => c.references('projects.id').onDelete('cascade'))
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('base_url', 'text', (c) => c.notNull())
        .addColumn('key_secret', 'text', (c) => c.notNull())
        .addColumn('model', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_by', 'text', (c) => c.notNull())
        .execute();
      await sql`create unique index models_org on models (org_id) where project_id is null`.execute(db);
      await sql`create unique index models_project on models (project_id) where project_id is not null`.execute(db);
      // Which model settings a task went by, written when it starts, so `berth task show` can
      // say: the provider; who named the model (task, project, org or instance); whose
      // provider, base URL and key it used (project, org or instance).
      await db.schema.alterTable('tasks').addColumn('model_provider', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('model_source', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('model_settings', 'text').execute();
    },
  },
  '0011_project_archive_task_setup': {
    async up(db: Kysely<any>) {
      // A project whose tasks have history is archived, not deleted: the tasks keep pointing
      // at it, it leaves every list and lookup by name, and its name is free for a new one.
      await db.schema.alterTable('projects').addColumn('archived_at', 'timestamptz').execute();
      await db.schema.alterTable('projects').dropConstraint('projects_org_name').execute();
      await sql`create unique index projects_org_name on projects (org_id, name) where archived_at is null`.execute(db);
      // Setup commands given with the task itself (`berth run --setup`), run after the
      // repository's and the project's.
      await db.schema.alterTable('tasks').addColumn('setup_commands', 'jsonb').execute();
    },
  },
  '0012_invites': {
    async up(db: Kysely<any>) {
      // One-time invite links for members added by email without an identity provider: the
      // code is kept only as a sha256 hash, used once (used_at), and lapses at expires_at.
      await db.schema
        .createTable('invites')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addColumn('used_at', 'timestamptz')
        .execute();
      await sql`create index invites_org_user on invites (org_id, user_id)`.execute(db);
    },
  },
  '0013_auto_start_oom': {
    async up(db: Kysely<any>) {
      // Whether a stopped environment reached by exec, a terminal or a copy starts by itself
      // (on by default; an owner or admin turns it off for the org).
      await db.schema.alterTable('orgs').addColumn('auto_start', 'boolean', (c) => c.notNull().defaultTo(true)).execute();
      // When a command last saw the kernel's OOM killer end a process in the environment.
      await db.schema.alterTable('environments').addColumn('last_oom_kill_at', 'timestamptz').execute();
    },
  },
  '0014_ownership': {
    async up(db: Kysely<any>) {
      // Environments and tasks belong to whoever made them (server/ownership.ts): owner_id is
      // the user (for an org token, the user who made it), or the token when it has no maker.
      // A task's environment belongs to the task's owner and names the task.
      await db.schema.alterTable('environments').addColumn('owner_id', 'text').execute();
      await db.schema.alterTable('environments').addColumn('task_id', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('owner_id', 'text').execute();
      // Who else may use an environment: one user (grantee = their id) or the whole org ('org').
      await db.schema
        .createTable('environment_shares')
        .addColumn('environment_id', 'text', (c) => c.notNull())
        .addColumn('org_id', 'text', (c) => c.notNull())
        .addColumn('grantee', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('environment_shares_pk', ['environment_id', 'grantee'])
        .execute();
      // What was made before is given to its maker where the record says who that was: a
      // task to its creator (an org token's to the user who made the token), a task's
      // environment to the task's owner, any other environment to whoever the audit log
      // shows creating it. The rest stays without an owner: admins and owners use it, and share it.
      await sql`update tasks set owner_id = substr(created_by, 6) where created_by like 'user:%'`.execute(db);
      await sql`update tasks set owner_id = coalesce(tokens.user_id, tokens.id) from tokens where tasks.created_by = 'token:' || tokens.id`.execute(db);
      await sql`update environments set owner_id = tasks.owner_id, task_id = tasks.id from tasks where tasks.environment_id = environments.id`.execute(db);
      await sql`update environments set owner_id = substr(a.actor, 6) from audit_entries a
        where environments.owner_id is null and environments.task_id is null and a.org_id = environments.org_id
          and a.action = 'environment.create' and a.target = environments.id and a.actor like 'user:%'`.execute(db);
      await sql`update environments set owner_id = coalesce(tokens.user_id, tokens.id) from audit_entries a, tokens
        where environments.owner_id is null and environments.task_id is null and a.org_id = environments.org_id
          and a.action = 'environment.create' and a.target = environments.id and a.actor = 'token:' || tokens.id`.execute(db);
    },
  },
  '0015_package_mirrors': {
    async up(db: Kysely<any>) {
      // The org's or a project's package mirrors, by ecosystem: { npm: { url, secret } }; null: none set here.
      await db.schema.alterTable('network_policies').addColumn('mirrors', 'jsonb').execute();
    },
  },
  '0016_environment_user_volumes': {
    async up(db: Kysely<any>) {
      // Who its commands run as (a user name of its image or a uid; null: its root), the ports
      // it serves (recorded only) and its named volumes [{ name, target }].
      await db.schema.alterTable('environments').addColumn('run_as', 'text').execute();
      await db.schema.alterTable('environments').addColumn('forward_ports', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`)).execute();
      await db.schema.alterTable('environments').addColumn('volumes', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`)).execute();
    },
  },
  '0017_many_hosts': {
    async up(db: Kysely<any>) {
      // The runner an environment lives on, for life (its files are there). Null: made before
      // runners could join, which is the local runner's (set by the local runner at start).
      await db.schema.alterTable('environments').addColumn('runner_id', 'text').execute();
      await db.schema.createIndex('environments_runner').on('environments').columns(['runner_id', 'state']).execute();
      // What placement reads: its labels (`gpu=true`), and whether it is being drained
      // (no new placements; what runs finishes).
      await db.schema.alterTable('runners').addColumn('labels', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`)).execute();
      await db.schema.alterTable('runners').addColumn('draining', 'boolean', (c) => c.notNull().defaultTo(false)).execute();
      // Tokens a runner on another host joins with: shown once, kept as a hash, revocable.
      await db.schema
        .createTable('runner_tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('hash', 'text', (c) => c.notNull().unique())
        .addColumn('labels', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('last_used_at', 'timestamptz')
        .addColumn('revoked_at', 'timestamptz')
        .execute();
      // One lease at a time per task: each claim takes the next number, and every write of
      // the task's run checks it, so a runner thought dead cannot write over its successor.
      await db.schema.alterTable('tasks').addColumn('lease', 'integer', (c) => c.notNull().defaultTo(0)).execute();
    },
  },
  '0018_policy_change_notify': {
    async up(db: Kysely<any>) {
      // Every replica caches what the egress proxy asks about (PolicyService). Triggers, not
      // the writers, announce changes to it, so no writer can forget to: the notification is
      // sent at commit (never for a rolled-back change), and repeats within one transaction
      // are delivered once. The payload is the table's name; the cache reads the rows.
      await sql`create function berth_policy_changed() returns trigger language plpgsql as $$
        begin
          perform pg_notify('berth_policy', tg_table_name);
          return null;
        end $$`.execute(db);
      for (const table of ['network_policies', 'projects', 'secrets']) {
        await sql`create trigger ${sql.raw(`${table}_policy_changed`)} after insert or update or delete on ${sql.table(table)}
          for each statement execute function berth_policy_changed()`.execute(db);
      }
      // Environments and tasks change often; only what the cache keys on counts: an
      // environment made, deleted or moved to another project, a task given its environment.
      await sql`create trigger environments_policy_added after insert or delete on environments for each statement execute function berth_policy_changed()`.execute(db);
      await sql`create trigger environments_policy_changed after update of state, project_id on environments for each row
        when (old.project_id is distinct from new.project_id or (old.state = 'deleted') <> (new.state = 'deleted'))
        execute function berth_policy_changed()`.execute(db);
      await sql`create trigger tasks_policy_changed after insert or update of environment_id on tasks for each row
        when (new.environment_id is not null) execute function berth_policy_changed()`.execute(db);
    },
  },
  '0019_placement': {
    async up(db: Kysely<any>) {
      // What a task asks of the runner that claims it: labels it must carry, and the memory its
      // environment is expected to take (the project's limit, else the default), held free on
      // that runner from the claim until the environment exists.
      await db.schema.alterTable('tasks').addColumn('runner_labels', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`)).execute();
      await db.schema.alterTable('tasks').addColumn('memory_bytes', 'bigint').execute();
      // Times a task was started over because its runner went offline under it.
      await db.schema.alterTable('tasks').addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      // Set by the runner sweep when the heartbeat stopped (its environments are then lost); the next heartbeat clears it.
      await db.schema.alterTable('runners').addColumn('offline_at', 'timestamptz').execute();
    },
  },
  '0020_runner_join': {
    async up(db: Kysely<any>) {
      // What an administrator called a runner token (`berth runner token create --name`).
      await db.schema.alterTable('runner_tokens').addColumn('name', 'text').execute();
      // The token a joined runner first registered with: its id cannot be taken over with another token.
      await db.schema.alterTable('runners').addColumn('token_id', 'text').execute();
    },
  },
  '0021_runner_replica': {
    async up(db: Kysely<any>) {
      // The internal URL of the control-plane replica that holds the runner (its connection, or
      // berth up's own): other replicas reach the runner through it (runners/relay.ts).
      await db.schema.alterTable('runners').addColumn('replica_url', 'text').execute();
    },
  },
  '0022_task_queue_notify': {
    async up(db: Kysely<any>) {
      // A task queued (new, retried, started over) or cancelled wakes every replica's workers at
      // commit, instead of at their next poll: a runner held by another replica claims it at once.
      await sql`create function berth_task_queue_changed() returns trigger language plpgsql as $$
        begin
          perform pg_notify('berth_tasks', new.state || ':' || new.id);
          return null;
        end $$`.execute(db);
      await sql`create trigger tasks_queue_changed after insert or update of state on tasks for each row
        when (new.state in ('queued', 'cancelled')) execute function berth_task_queue_changed()`.execute(db);
    },
  },
  '0023_triggers': {
    async up(db: Kysely<any>) {
      // Where a task came from beyond its trigger's kind (a delivery, a Slack user, a schedule),
      // where to tell of it (an issue comment, a Slack thread: triggers/replies.ts), what was
      // last told, and the task whose branch and change request it continues.
      await db.schema
        .alterTable('tasks')
        .addColumn('triggered_by', 'text')
        .addColumn('reply_to', 'jsonb')
        .addColumn('replied_state', 'text')
        .addColumn('continues_task_id', 'text')
        .addColumn('trigger_key', 'text')
        .execute();
      // One task per delivery or schedule slot, whatever retries and restarts happen.
      await sql`create unique index tasks_trigger_key on tasks (trigger_key) where trigger_key is not null`.execute(db);
      await sql`create index tasks_reply_pending on tasks (updated_at) where reply_to is not null`.execute(db);
      // Every webhook delivery, written before it is acted on: a redelivery of the same id is
      // recognised and starts nothing, and one a crash interrupted is taken up again.
      await db.schema
        .createTable('webhook_deliveries')
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('delivery_id', 'text', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('payload', 'jsonb')
        .addColumn('received_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('processed_at', 'timestamptz')
        .addColumn('outcome', 'text')
        .addColumn('org_id', 'text')
        .addColumn('task_id', 'text')
        .addPrimaryKeyConstraint('webhook_deliveries_pk', ['source', 'delivery_id'])
        .execute();
      await sql`create index webhook_deliveries_pending on webhook_deliveries (received_at) where processed_at is null`.execute(db);
      // The instance's GitHub App, GitLab and Slack app: settings in the clear, secrets sealed.
      await db.schema
        .createTable('integrations')
        .addColumn('kind', 'text', (c) => c.primaryKey())
        .addColumn('settings', 'jsonb', (c) => c.notNull())
        .addColumn('secrets', 'text', (c) => c.notNull())
        .addColumn('updated_by', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();
      // Cron rules that start tasks or stop and start environments (triggers/schedules).
      await db.schema
        .createTable('schedules')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('name', 'text')
        .addColumn('cron', 'text', (c) => c.notNull())
        .addColumn('timezone', 'text', (c) => c.notNull())
        .addColumn('project_id', 'text')
        .addColumn('environment_id', 'text')
        .addColumn('action', 'text')
        .addColumn('task', 'jsonb')
        .addColumn('paused', 'boolean', (c) => c.notNull().defaultTo(false))
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('owner_id', 'text')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('next_at', 'timestamptz')
        .addColumn('last_slot', 'timestamptz')
        .addColumn('deleted_at', 'timestamptz')
        .execute();
      await sql`create index schedules_due on schedules (next_at) where deleted_at is null and not paused`.execute(db);
      // One row per slot fired: the primary key is what keeps two replicas from firing it twice.
      await db.schema
        .createTable('schedule_firings')
        .addColumn('schedule_id', 'text', (c) => c.notNull())
        .addColumn('slot', 'timestamptz', (c) => c.notNull())
        .addColumn('fired_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('outcome', 'text', (c) => c.notNull())
        .addColumn('task_id', 'text')
        .addPrimaryKeyConstraint('schedule_firings_pk', ['schedule_id', 'slot'])
        .execute();
      // Generic webhooks: a URL with a secret that starts a task from a template.
      await db.schema
        .createTable('webhook_triggers')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('project_id', 'text', (c) => c.notNull())
        .addColumn('goal_template', 'text', (c) => c.notNull())
        .addColumn('auth', 'text', (c) => c.notNull())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('rate_per_minute', 'integer', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('owner_id', 'text')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('deleted_at', 'timestamptz')
        .execute();
      await sql`create unique index webhook_triggers_name on webhook_triggers (org_id, name) where deleted_at is null`.execute(db);
    },
  },
  '0024_snapshots_prebuilds': {
    async up(db: Kysely<any>) {
      // An environment's files frozen on its runner (runner/store.ts): what forks, creates
      // --from, prebuilds and warm pools start from. The row is written (creating) before the
      // runner freezes anything, so a crash leaves a row the next start can finish or clear.
      await db.schema
        .createTable('snapshots')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('environment_id', 'text')
        .addColumn('project_id', 'text')
        .addColumn('runner_id', 'text', (c) => c.notNull())
        .addColumn('image', 'text', (c) => c.notNull())
        .addColumn('image_digest', 'text')
        .addColumn('bytes', 'bigint')
        .addColumn('copied', 'boolean', (c) => c.notNull().defaultTo(false))
        .addColumn('paused_ms', 'double precision')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('deleted_at', 'timestamptz')
        .execute();
      await sql`create unique index snapshots_name on snapshots (org_id, name) where deleted_at is null`.execute(db);
      // What an environment was made from, and, for a warm pool's environment not yet claimed,
      // the project and prebuild it waits for a task of.
      await db.schema
        .alterTable('environments')
        .addColumn('snapshot_id', 'text')
        .addColumn('pool_project_id', 'text')
        .addColumn('pool_prebuild_id', 'text')
        .execute();
      await sql`create index environments_pool on environments (pool_project_id) where pool_project_id is not null`.execute(db);
      // A project's prebuilds: the repository cloned at a commit and set up, then snapshotted.
      await db.schema
        .createTable('prebuilds')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('project_id', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('trigger', 'text', (c) => c.notNull())
        .addColumn('branch', 'text')
        .addColumn('commit_sha', 'text')
        .addColumn('spec_key', 'text')
        .addColumn('snapshot_id', 'text')
        .addColumn('runner_id', 'text')
        .addColumn('environment_id', 'text')
        .addColumn('state_reason', 'text')
        .addColumn('log', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('claimed_by', 'text')
        .addColumn('heartbeat_at', 'timestamptz')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('started_at', 'timestamptz')
        .addColumn('finished_at', 'timestamptz')
        .execute();
      await sql`create index prebuilds_project on prebuilds (project_id, created_at)`.execute(db);
      await sql`create index prebuilds_queued on prebuilds (created_at) where state = 'queued'`.execute(db);
    },
  },
  '0025_campaigns': {
    async up(db) {
      // One change across many repositories: the campaign (its settings and state) and one
      // target per repository. A target is written (starting, with its attempt) before its task
      // is made, and the task carries the key campaign:ID:TARGET:ATTEMPT, so a control plane
      // killed in between finds the task it made instead of making a second.
      await db.schema
        .createTable('campaigns')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('goal', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('settings', 'jsonb', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('owner_id', 'text')
        .addColumn('run', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('next_start_at', 'timestamptz')
        .addColumn('peak_running', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('finished_at', 'timestamptz')
        .execute();
      await sql`create unique index campaigns_name on campaigns (org_id, name)`.execute(db);
      await sql`create index campaigns_active on campaigns (created_at) where state = 'running'`.execute(db);
      await db.schema
        .createTable('campaign_targets')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('campaign_id', 'text', (c) => c.notNull().references('campaigns.id'))
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('repo', 'text', (c) => c.notNull())
        .addColumn('repo_key', 'text', (c) => c.notNull())
        .addColumn('project_id', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('task_id', 'text')
        .addColumn('first_task_id', 'text')
        .addColumn('failure', 'text')
        .addColumn('reason', 'text')
        .addColumn('change_request', 'jsonb')
        .addColumn('pr_state', 'text')
        .addColumn('pr_checks', 'text')
        .addColumn('pr_review', 'text')
        .addColumn('refreshed_at', 'timestamptz')
        .addColumn('started_at', 'timestamptz')
        .addColumn('finished_at', 'timestamptz')
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();
      await sql`create unique index campaign_targets_repo on campaign_targets (campaign_id, repo_key)`.execute(db);
      await sql`create index campaign_targets_state on campaign_targets (campaign_id, state, seq)`.execute(db);
      // A campaign's task pushes to the campaign's branch, not one named after the task.
      await db.schema.alterTable('tasks').addColumn('work_branch', 'text').execute();
    },
  },
  '0026_campaign_retries': {
    async up(db) {
      // One reading of a campaign's change requests per period, whichever replica takes it.
      await db.schema.alterTable('campaigns').addColumn('refreshed_at', 'timestamptz').execute();
      // The attempt a task retries (a campaign's next attempt, `berth task retry`): when that
      // one was stopped after its push, the branch still ending at the commit it recorded
      // (head_sha) is adopted, not pushed to again (tasks/pipeline.ts).
      await db.schema.alterTable('tasks').addColumn('retries_task_id', 'text').execute();
      // A campaign's task that ends is told on the tasks channel too (end state:id), so the
      // campaign scheduler settles it and starts the next at once instead of polling for it.
      await sql`drop trigger tasks_queue_changed on tasks`.execute(db);
      await sql`create trigger tasks_queue_changed after insert or update of state on tasks for each row
        when (new.state in ('queued', 'cancelled') or (new.trigger = 'campaign' and new.state in ('succeeded', 'failed', 'timed_out')))
        execute function berth_task_queue_changed()`.execute(db);
    },
  },
  '0027_one_off_settings': {
    async up(db) {
      // A one-off task's transient project (a campaign's repository without a project): the
      // image, the egress domains added to the org's and the org secret holding the forge token.
      await db.schema.alterTable('tasks').addColumn('one_off', 'jsonb').execute();
      // Secrets named as forge tokens are the host's only, never an environment's variable: the
      // names one-off tasks use are asked per org whenever a project's secrets are read.
      await sql`create index tasks_one_off_token on tasks (org_id, (one_off->'forge'->>'tokenSecret')) where one_off->'forge' ? 'tokenSecret'`.execute(db);
    },
  },
};

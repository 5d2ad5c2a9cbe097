// One task from claim to pull request: clone (on the host, with credentials that never
// enter the sandbox), provision, copy in, set up, let the agent work, check, take the
// change out as a patch, commit and push on the host, open the change request.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { markStep } from '../../shared/spans.ts';
import type { Logger } from 'pino';
import { BuiltinAgent, modelClientFor, modelClientFromEnv, type AgentOutcome } from '../../agent/index.ts';
import { changedFiles, cloneRepo, commitPatch, diffOf, forgeFor, pushBranch, remoteBranchSha, type Forge, type ForgeAuth, type ForgeSettings, type GitCredentials, type GitReach, type RepoAccess } from '../../forges/index.ts';
import { BerthError } from '../../shared/errors.ts';
import type { ChangeRequest, TaskEventData, TaskState, TaskStep, Usage } from '../../shared/tasks.ts';
import { Redactor } from '../../shared/redact.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Db, ProjectRow, TaskRow, TaskUpdate } from '../db/index.ts';
import { assertOwnRepository } from './own-repo.ts';
import { oneOffAllowList } from '../policy/index.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { SecretService } from '../secrets/service.ts';
import type { TaskEvents } from './events.ts';
import { mergeSpec, readRepoSpec, type WorkSpec } from './repo-config.ts';
import { buildSpecImage, type SpecImageDeps } from './spec-image.ts';
import { runIn, SandboxWorkspace, taskScope, type RunOptions } from './sandbox.ts';
import { workEnvironmentBody } from './work-environment.ts';
import { copyRepoIn } from './copy-in.ts';
import { changeRequestName, commitMessage, issueReference, prBody, repoNameOf, slugOf, titleOf } from './change-text.ts';
import { secretsInChange } from './leaks.ts';
import type { CommandAgentGateway } from './gateway.ts';
import type { ModelSettingsService, TaskModelPlan } from '../models/service.ts';
import type { DenialAdvisor } from './denials.ts';
import type { SnapshotService } from '../snapshots/service.ts';
import type { WarmPools } from '../prebuilds/types.ts';
import { CATCH_UP_SCRIPT, catchUpInput, choosePrebuild, type PrebuildChoice } from '../prebuilds/for-task.ts';
import { planIncremental } from '../prebuilds/incremental.ts';
import { specKey } from '../prebuilds/spec-key.ts';

export interface PipelineDeps {
  db: Db;
  events: TaskEvents;
  environments: EnvironmentService;
  secrets: SecretService;
  audit: AuditLog;
  logger: Logger;
  /** Host directory for the tasks' clones (DATA_DIR/tasks). */
  workDir: string;
  /** Where people reach this Berth: the pull request links to the task there. */
  publicUrl: () => string;
  /** Where model settings are read (OPENAI_*, ANTHROPIC_*, BERTH_MODEL). */
  modelEnv: NodeJS.ProcessEnv;
  /** The org's and projects' model settings, over the instance's. */
  models: ModelSettingsService;
  gateway: CommandAgentGateway | null;
  /** Where host-side git may go: checked again before every clone and push. */
  repos: RepoAccess;
  /** Builds devcontainer Dockerfiles and features; without it a spec that needs a build fails the task. */
  images?: SpecImageDeps | undefined;
  /** Says when the environment keeps asking for a refused destination, and stops commands that only wait on one. */
  denials?: DenialAdvisor | undefined;
  /** Makes environments from a project's prebuild (prebuilds/for-task.ts); without it every task starts fresh. */
  snapshots?: SnapshotService | undefined;
  /** Environments already started from the prebuild, claimed before one is made (prebuilds/warm-pool.ts). */
  warmPools?: WarmPools | undefined;
}

/** The task ends in this state with this reason; thrown from anywhere in the run. */
export class TaskEnd extends Error {
  readonly state: Extract<TaskState, 'failed' | 'timed_out' | 'cancelled'>;
  constructor(state: TaskEnd['state'], reason: string) {
    super(reason);
    this.state = state;
  }
}

/**
 * The run's runner left this process (its connection ended): the run stops and writes
 * nothing, so the task stays where it is for the runner sweep to move (retry) if the
 * runner does not come back.
 */
export class RunnerGone extends Error {}

const WORKSPACE = '/workspace';
const OUTPUT_IN_EVENT = 16 * 1024;
const SETUP_TIMEOUT_MS = 30 * 60_000;
const AUTHOR = { name: 'Berth', email: 'berth@localhost' };

const tail = (b: Buffer | string, max = OUTPUT_IN_EVENT) => {
  const s = typeof b === 'string' ? b : b.toString('utf8');
  return s.length > max ? `…(${s.length - max} characters before this)\n${s.slice(-max)}` : s;
};

/** An agent tool's command as the agent wrote it: run_command's shell line without its `exec 2>&1` preamble. */
const commandName = (cmd: string[]) => (cmd[0] === 'sh' && cmd[1] === '-c' && cmd[2] ? cmd[2].replace(/^exec 2>&1\n/, '') : cmd.join(' '));

/** Runs one claimed task to its end. Resolves when the task's final state is stored. */
/** An earlier attempt stopped between deciding what to push and ending: what it recorded. */
interface StoppedAttempt {
  id: string;
  head_sha: string;
  base_sha: string;
  base_branch: string;
  change_request: ChangeRequest | null;
  checks_passed: boolean | null;
  summary: string | null;
  diff: string | null;
}

export class TaskRun {
  readonly #d: PipelineDeps;
  #task: TaskRow;
  readonly #signal: AbortSignal;
  readonly #usage: Usage;
  #persistUsage: Promise<unknown> = Promise.resolve();
  #redactor = new Redactor([]);
  #secretValues: { name: string; value: string }[] = [];
  #environmentId: string | null;
  /** The model settings the task runs with, resolved first thing. */
  #model: TaskModelPlan | null = null;
  /** A write found the task's lease taken by a later claim: this run stops and writes nothing more. */
  #fenced = false;

  constructor(deps: PipelineDeps, task: TaskRow, signal: AbortSignal) {
    this.#d = deps;
    this.#task = task;
    this.#signal = signal;
    this.#environmentId = task.environment_id;
    this.#usage = { inputTokens: Number(task.input_tokens), outputTokens: Number(task.output_tokens), costUsd: task.cost_usd };
  }

  get #scope() {
    return taskScope(this.#task.org_id, this.#task.id, this.#task.owner_id);
  }

  #emit(data: TaskEventData): Promise<unknown> {
    // A run whose lease was taken has no say in the task's transcript any more.
    if (this.#fenced) return Promise.resolve();
    // Command output is redacted where it is read; this catches the rest (model text, tool arguments).
    // String by string: in JSON text an escaped character would hide a value from redaction.
    if (this.#secretValues.length && (data.type === 'model' || data.type === 'tool' || data.type === 'log' || data.type === 'result')) {
      data = this.#redactor.redactValue(data);
    }
    return this.#d.events.append(this.#task.id, data).catch((err) => this.#d.logger.error({ err, task: this.#task.id }, 'could not record a task event'));
  }

  /**
   * Writes to the task row only while this run still owns it: not cancelled meanwhile, and
   * still holding the lease its claim took (fencing: a run on a runner thought dead, whose
   * task went to another runner, writes nothing over its successor's and stops).
   */
  async #update(patch: TaskUpdate, from: TaskState[] = ['provisioning', 'running']): Promise<void> {
    const row = await this.#d.db
      .updateTable('tasks')
      .set({ ...patch, updated_at: new Date() })
      .where('id', '=', this.#task.id)
      .where('state', 'in', from)
      .where('lease', '=', this.#task.lease)
      .returningAll()
      .executeTakeFirst();
    if (!row) {
      const now = await this.#d.db.selectFrom('tasks').select('lease').where('id', '=', this.#task.id).executeTakeFirst();
      if (now && now.lease !== this.#task.lease) {
        this.#fenced = true;
        throw new TaskEnd('failed', 'the task was taken from this runner');
      }
      throw new TaskEnd('cancelled', 'cancelled');
    }
    this.#task = row;
  }

  async #step(step: TaskStep, message: string): Promise<void> {
    this.#signal.throwIfAborted();
    markStep(step);
    await this.#update({ step });
    await this.#emit({ type: 'step', step, message });
  }

  async run(): Promise<void> {
    // A directory per claim: a run fenced off (its runner thought dead) that ends late removes
    // its own clone, never the one of the run that took the task over.
    const dir = join(this.#d.workDir, `${this.#task.id}.${this.#task.lease}`);
    try {
      await this.#emit({ type: 'state', state: 'provisioning' });
      await this.#work(dir);
    } catch (err) {
      await this.#fail(err);
    } finally {
      await this.#persistUsage.catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      if (this.#environmentId) {
        // The environment is kept, stopped, so people can look at what the agent left.
        await this.#d.environments.stop(this.#scope, this.#environmentId, `task ${this.#task.id} ended`).catch(() => {});
      }
      this.#d.events.release(this.#task.id);
      this.#d.denials?.forget(this.#task.id);
    }
  }

  async #fail(err: unknown): Promise<void> {
    if (this.#signal.reason instanceof RunnerGone) {
      this.#fenced = true;
      return;
    }
    let end: TaskEnd;
    if (err instanceof TaskEnd) end = err;
    else if (this.#signal.aborted) {
      const reason = this.#signal.reason;
      end = reason instanceof TaskEnd ? reason : new TaskEnd('cancelled', 'cancelled');
    } else {
      this.#d.logger.error({ err, task: this.#task.id }, 'task failed');
      end = new TaskEnd('failed', err instanceof Error ? err.message : String(err));
    }
    // Every reason, ours too: "the agent failed: …" carries the model's or a command's words.
    end = new TaskEnd(end.state, this.#redactor.redact(end.message));
    try {
      await this.#update({ state: end.state, state_reason: end.message, finished_at: new Date() });
      await this.#emit({ type: 'state', state: end.state, reason: end.message });
    } catch (e) {
      // Someone else ended the task first (a cancel): their state stands.
      if (!(e instanceof TaskEnd)) this.#d.logger.error({ err: e, task: this.#task.id }, 'could not record the end of a task');
    }
  }

  async #work(dir: string): Promise<void> {
    const task = this.#task;
    const project = task.project_id ? await this.#d.db.selectFrom('projects').selectAll().where('id', '=', task.project_id).executeTakeFirst() : undefined;
    if (task.project_id) {
      this.#secretValues = await this.#d.secrets.forProject(task.org_id, task.project_id);
      this.#redactor = new Redactor(this.#secretValues);
    }
    await this.#resolveModel(project);

    // Clone on the host: the forge's credentials stay here, never in the sandbox.
    await this.#step('cloning', `cloning ${task.repo_url}`);
    // A one-off task's transient project names its forge token as a project's settings would.
    const forgeSettings: ForgeSettings = project?.settings.forge ?? task.one_off?.forge ?? {};
    // Before anything reaches the forge (an App's token comes from its API).
    const reach = await this.#reach(forgeSettings, project);
    const forge = forgeFor(task.repo_url, forgeSettings, await this.#forgeAuth(forgeSettings), await this.#deployKey(forgeSettings));
    const credentials = await forge.gitCredentials();
    for (const s of credentials.secrets) this.#secretValues.push({ name: 'forge credentials', value: s });
    this.#redactor = new Redactor(this.#secretValues);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const repoDir = join(dir, 'repo');
    // A continuation (a review asked for changes) adds commits to the branch of the task it
    // continues and updates its change request; from the start it belongs to that change.
    const continued = task.continues_task_id ? await this.#continued(task.continues_task_id) : null;
    const cloned = await this.#clone({ url: task.repo_url, reach, dir: repoDir, branch: continued?.branch ?? task.base_branch ?? undefined, credentials }, continued);
    // A campaign's task pushes to the campaign's branch (tasks.work_branch), one per repository.
    const branch = continued?.branch ?? task.work_branch ?? `berth/${task.id}-${slugOf(task.goal)}`;
    await this.#update({ base_sha: cloned.baseSha, base_branch: cloned.branch, branch, ...(continued && { change_request: JSON.stringify(continued.changeRequest) }) });
    await this.#emit({ type: 'log', level: 'info', message: `cloned ${cloned.branch} at ${cloned.baseSha.slice(0, 12)}${continued ? `: new commits go on top, to ${changeRequestName(continued.changeRequest)}` : ''}` });
    // The retry of an attempt stopped after it pushed (its control plane killed): the commit
    // that attempt recorded before pushing is still the branch's head, so that push is this
    // task's. Adopted, never pushed again: no second commit, no second change request. So is
    // this task's own push when its runner was lost right after it and the task was requeued.
    const stopped = [task.retries_task_id ? await this.#stoppedAfterPush(task.retries_task_id, branch) : null, this.#ownEarlierClaim(task, branch)].filter((s) => s !== null);
    const remoteHead = stopped.length ? await remoteBranchSha({ dir: repoDir, branch }) : null;
    const earlier = stopped.find((s) => s.head_sha === remoteHead);
    if (earlier) {
      await this.#adopt(earlier, { forge, repoDir, branch, continued });
      return;
    }

    const spec = mergeSpec(await readRepoSpec(repoDir), project?.settings.work ?? (task.one_off?.image ? { image: task.one_off.image } : {}));
    if (task.check_command) spec.check = task.check_command;
    // What a prebuild of the project did: the repository's and the project's setup, not the task's.
    const projectSetup = spec.setup;
    // The task's own setup runs after the repository's and the project's: it adds to them.
    if (task.setup_commands?.length) spec.setup = [...spec.setup, ...task.setup_commands];
    await this.#emit({ type: 'log', level: 'info', message: `environment from ${spec.source}: image ${spec.build ? `built from ${spec.build.dockerfile ? `${spec.build.configDir}/${spec.build.dockerfile}` : (spec.build.image ?? 'default')}${spec.build.features ? ` with ${Object.keys(spec.build.features).length} feature(s)` : ''}` : (spec.image ?? 'default')}, ${spec.setup.length} setup command(s), check ${spec.check ? `\`${spec.check}\`` : 'none'}${spec.user ? `, commands run as ${spec.user}` : ''}${spec.volumes.length ? `, volumes ${spec.volumes.map((v) => `${v.name} at ${v.target}`).join(', ')}` : ''}` });
    for (const note of spec.notes) await this.#emit({ type: 'log', level: 'warn', message: note });

    if (spec.build) spec.image = await this.#buildImage(spec, repoDir, project?.name ?? repoNameOf(task.repo_url));
    await this.#step('provisioning', 'starting the environment');
    const root = spec.workspaceFolder ?? `${WORKSPACE}/${repoNameOf(task.repo_url)}`;
    const choice = project && this.#d.snapshots ? await choosePrebuild(this.#d.db, { projectId: project.id, runnerId: task.runner_id, specKey: specKey({ ...spec, setup: projectSetup }), repoDir, baseSha: cloned.baseSha }) : null;
    let setup = spec.setup;
    let env: string;
    const fromPrebuild = choice && 'prebuild' in choice ? await this.#fromPrebuild(choice, spec, project!, { dir, repoDir, root, branch: cloned.branch, base: cloned.baseSha }) : null;
    if (fromPrebuild) {
      env = fromPrebuild.env;
      setup = [...fromPrebuild.rerun, ...(task.setup_commands ?? [])];
    } else {
      if (choice && 'why' in choice) await this.#emit({ type: 'log', level: 'info', message: `not from a prebuild: ${choice.why}` });
      env = await this.#provision(spec, project?.name);
      await this.#copyIn(repoDir, root, spec.user);
    }
    await this.#update({ state: 'running', started_at: new Date() }, ['provisioning']);
    await this.#emit({ type: 'state', state: 'running' });

    const run = (cmd: string[], o: RunOptions = {}) =>
      runIn(this.#d.environments, this.#scope, env, cmd, { ...o, signal: o.signal ? AbortSignal.any([this.#signal, o.signal]) : this.#signal });
    const envVars = { ...spec.env, BERTH_TASK_ID: task.id };

    if (setup.length) {
      await this.#step('setup', `running ${setup.length} setup command(s)`);
      for (const cmd of setup) {
        const r = await this.#command('setup', cmd, (stop) => run(['sh', '-c', cmd], { cwd: root, env: envVars, timeoutMs: Math.min(SETUP_TIMEOUT_MS, this.#remainingMs()), stop }));
        if (r.stoppedBy) throw new TaskEnd('failed', `setup command \`${cmd}\` was ${r.stoppedBy}`);
        if (r.exitCode !== 0) throw new TaskEnd('failed', `setup command \`${cmd}\` exited with ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}${r.message ? ` (${r.message})` : ''}: fix it in ${spec.source} or the project's settings`);
      }
    }

    // The agent works; failing checks send it back with the failure, up to the limit.
    await this.#step('agent', task.agent === 'builtin' ? `the built-in agent is working (${task.model ?? this.#d.modelEnv.BERTH_MODEL ?? 'default model'})` : `running \`${task.command}\``);
    // The agent's own commands: one that only waits on refusals is stopped, and the agent reads why.
    const agentRun = (cmd: string[], o: RunOptions = {}) => this.#watched('agent', commandName(cmd), true, (stop) => run(cmd, { ...o, stop }));
    const workspace = new SandboxWorkspace({ root, env: envVars, run: agentRun });
    const attempt = task.agent === 'builtin' ? this.#builtinAgent(workspace, spec) : this.#commandAgent(env, root, envVars);
    let outcome = await attempt.next();
    let checks: { passed: boolean; attempts: number; output: string } | null = null;
    let budgetNote: string | null = null;
    for (let n = 1; ; n++) {
      const o = outcome.value;
      if (o.kind === 'cancelled') throw this.#signal.reason instanceof TaskEnd ? this.#signal.reason : new TaskEnd('cancelled', 'cancelled');
      if (o.kind === 'failed') throw new TaskEnd('failed', `the agent failed: ${o.reason}`);
      if (o.kind === 'budget') {
        budgetNote = o.message;
        if (o.which === 'time') throw new TaskEnd('timed_out', o.message);
      }
      if (!spec.check) break;
      await this.#step('checks', `running \`${spec.check}\`${n > 1 ? ` (attempt ${n})` : ''}`);
      const r = await this.#command('check', spec.check, (stop) => run(['sh', '-c', spec.check!], { cwd: root, env: envVars, timeoutMs: Math.min(SETUP_TIMEOUT_MS, this.#remainingMs()), stop }));
      const output = tail(Buffer.concat([r.stdout, r.stderr]), 8 * 1024);
      const passed = r.exitCode === 0 && !r.stoppedBy;
      checks = { passed, attempts: n, output };
      await this.#emit({ type: 'check', attempt: n, passed, exitCode: r.exitCode, summary: passed ? 'passed' : `exited with ${r.exitCode}${r.message ? ` (${r.message})` : ''}` });
      await this.#update({ checks_passed: passed });
      // The code is not what failed: another try of the agent would meet the same refusals.
      if (r.stoppedBy) throw new TaskEnd('failed', `check \`${spec.check}\` was ${r.stoppedBy}`);
      if (passed || budgetNote || n > task.budget.maxCheckRetries) break;
      await this.#step('agent', `checks failed: the agent gets another try (${n} of ${task.budget.maxCheckRetries})`);
      outcome = await attempt.next(
        `The check command \`${spec.check}\` failed with exit code ${r.exitCode}${r.message ? ` (${r.message})` : ''}. Its output:\n\n${output}\n\nFix the code so the check passes, run it yourself, then call finish with a summary.`,
      );
    }
    const last = outcome.value;
    // The summary is the model's words: it goes into the commit message and the pull request.
    const summary = this.#redactor.redact(last.kind === 'finished' ? last.summary : (budgetNote ?? 'the agent stopped without a summary'));
    await this.#update({ summary });

    // Take the change out as a patch and commit it on the host, where git is ours.
    await this.#step('commit', 'collecting the change');
    const base = cloned.baseSha;
    const patch = await run(['sh', '-c', 'git add -A >/dev/null && exec git -c core.quotepath=off diff --cached --binary --no-color --no-ext-diff "$1"', 'sh', base], {
      cwd: root,
      redact: false,
      maxOutput: 256 * 1024 * 1024,
    });
    if (patch.exitCode !== 0) throw new TaskEnd('failed', `could not collect the change: ${tail(patch.stderr, 2000).trim() || `git exited with ${patch.exitCode}`}`);
    const message = this.#redactor.redact(commitMessage(task.goal, summary, this.#taskUrl()));
    const commit = await commitPatch({ dir: repoDir, baseSha: base, branch, patch: patch.stdout, message, author: AUTHOR });
    if (commit.empty) {
      await this.#finish(checks, summary, budgetNote, false);
      return;
    }
    await this.#assertNoSecrets(repoDir, base, commit.sha);
    // What viewers read: redacted too, as a net for what the check above cannot know.
    const diff = patch.stdout.length <= 5 * 1024 * 1024 ? this.#redactor.redact(patch.stdout.toString('utf8')) : null;
    await this.#update({ head_sha: commit.sha, diff });
    await this.#d.audit.append({ orgId: task.org_id, actor: `task:${task.id}`, action: 'task.files_changed', target: task.id, environmentId: env, details: { branch, files: commit.files.slice(0, 1000), count: commit.files.length } });
    await this.#emit({ type: 'log', level: 'info', message: `committed ${commit.sha.slice(0, 12)} on ${branch}: ${commit.files.length} file(s)` });

    await this.#step('push', `pushing ${branch}`);
    // A GitHub App token lives an hour: ask again (the forge reuses it while it is fresh).
    const pushCredentials = await forge.gitCredentials();
    for (const s of pushCredentials.secrets) this.#secretValues.push({ name: 'forge credentials', value: s });
    const pushReach = await this.#reach(forgeSettings, project);
    if (continued) {
      // Never forced: a branch that moved on the server meanwhile gets this change on top of its new head, or nothing.
      const pushed = await this.#pushOnTop({ dir, repoDir, branch, reach: pushReach, credentials: pushCredentials, patch: patch.stdout, message, sha: commit.sha });
      if (!pushed) {
        await this.#finish(checks, summary, budgetNote, false);
        return;
      }
      await this.#step('pull_request', `updated ${changeRequestName(continued.changeRequest)}`);
      await this.#emit({ type: 'log', level: 'info', message: `pushed ${pushed.slice(0, 12)} to ${branch}: updated the existing ${changeRequestName(continued.changeRequest)}${continued.changeRequest.url ? ` (${continued.changeRequest.url})` : ''}, no new one opened` });
      await this.#finish(checks, summary, budgetNote, true);
      return;
    }
    await pushBranch({ dir: repoDir, url: task.repo_url, reach: pushReach, branch, credentials: pushCredentials, signal: this.#signal });

    await this.#openChangeRequest(forge, { base: cloned.branch, branch, summary, files: commit.files, checks, check: spec.check, budgetNote });
    await this.#finish(checks, summary, budgetNote, true);
  }

  async #openChangeRequest(forge: Forge, o: { base: string; branch: string; summary: string; files: string[]; checks: { passed: boolean; attempts: number; output: string } | null; check: string | null; budgetNote: string | null; adopted?: boolean }): Promise<void> {
    const task = this.#task;
    const green = o.checks === null || o.checks.passed;
    await this.#step('pull_request', forge.kind === 'git' ? 'recording the change request' : `opening a ${forge.kind === 'gitlab' ? 'merge' : 'pull'} request`);
    const request = {
      base: o.base,
      head: o.branch,
      title: this.#redactor.redact(titleOf(task.goal)),
      body: this.#redactor.redact(prBody({ goal: task.goal, summary: o.summary, files: o.files, checks: o.checks, check: o.check, budgetNote: o.budgetNote, url: this.#taskUrl(), usage: this.#usage, model: task.agent === 'builtin' ? task.model : task.command, closes: issueReference(task.reply_to) })),
      draft: !green || o.budgetNote !== null || (forge.kind !== 'git' && (await this.#campaignWantsDraft())),
    };
    let cr: ChangeRequest;
    try {
      cr = await forge.openChangeRequest(request);
    } catch (e) {
      // An adopted push whose attempt opened its pull request, then was stopped before it wrote it down.
      const found = o.adopted && e instanceof BerthError && e.kind === 'conflict' ? await forge.findChangeRequest?.({ head: o.branch, base: o.base }) : null;
      if (!found) throw e;
      cr = found;
    }
    await this.#update({ change_request: JSON.stringify(cr) });
    await this.#emit({ type: 'log', level: 'info', message: cr.url ? `${cr.draft ? 'draft ' : ''}${cr.kind.replace('_', ' ')}: ${cr.url}` : `change request kept in Berth: \`berth task approve ${task.id}\` merges ${o.branch}` });
  }

  /**
   * The attempt this task retries, when it was stopped after deciding what to push (at step
   * push or pull_request, with the commit it was pushing recorded as head_sha, on this branch).
   */
  async #stoppedAfterPush(id: string, branch: string): Promise<StoppedAttempt | null> {
    const row = await this.#d.db
      .selectFrom('tasks')
      .select(['id', 'state', 'step', 'branch', 'head_sha', 'base_sha', 'base_branch', 'change_request', 'checks_passed', 'summary', 'diff'])
      .where('id', '=', id)
      .where('org_id', '=', this.#task.org_id)
      .executeTakeFirst();
    if (!row || row.state !== 'failed' || (row.step !== 'push' && row.step !== 'pull_request') || row.branch !== branch || !row.head_sha || !row.base_sha || !row.base_branch) return null;
    return { ...row, head_sha: row.head_sha, base_sha: row.base_sha, base_branch: row.base_branch };
  }

  /**
   * What an earlier claim of this same task recorded before it pushed (head_sha, on this branch),
   * as the task was claimed again: a requeue (requeue.ts, worker.ts recover) clears the step and
   * keeps the rest. Only the remote can say whether that push happened.
   */
  #ownEarlierClaim(claimed: TaskRow, branch: string): StoppedAttempt | null {
    const { id, head_sha, base_sha, base_branch, change_request, checks_passed, summary, diff } = claimed;
    if (!head_sha || !base_sha || !base_branch || claimed.branch !== branch) return null;
    return { id, head_sha, base_sha, base_branch, change_request, checks_passed, summary, diff };
  }

  /** Takes the earlier attempt's pushed commit as this task's: opens its change request if it had none yet, and ends as it would have. */
  async #adopt(earlier: StoppedAttempt, o: { forge: Forge; repoDir: string; branch: string; continued: { changeRequest: ChangeRequest } | null }): Promise<void> {
    const task = this.#task;
    await this.#emit({ type: 'log', level: 'info', message: `${o.branch} ends at ${earlier.head_sha.slice(0, 12)}, the commit ${earlier.id === task.id ? "this task's earlier run" : `task ${earlier.id}`} pushed before it was stopped: that push is adopted, nothing is made or pushed again` });
    const summary = earlier.summary ?? '';
    // A change that reached the push with failing checks had used up its tries.
    const checks = earlier.checks_passed === null ? null : { passed: earlier.checks_passed, attempts: earlier.checks_passed ? 1 : task.budget.maxCheckRetries + 1, output: '' };
    await this.#update({ base_sha: earlier.base_sha, base_branch: earlier.base_branch, head_sha: earlier.head_sha, diff: earlier.diff, summary, checks_passed: earlier.checks_passed });
    const cr = o.continued?.changeRequest ?? earlier.change_request;
    if (cr) await this.#update({ change_request: JSON.stringify(cr) });
    else {
      const files = await changedFiles({ dir: o.repoDir, base: earlier.base_sha, head: earlier.head_sha });
      await this.#openChangeRequest(o.forge, { base: earlier.base_branch, branch: o.branch, summary, files, checks, check: checks ? (task.check_command ?? 'the check') : null, budgetNote: null, adopted: true });
    }
    await this.#finish(checks, summary, null, true);
  }

  /** A campaign made with `--draft` opens its pull/merge requests as drafts (green or not). */
  async #campaignWantsDraft(): Promise<boolean> {
    const by = this.#task.trigger === 'campaign' ? this.#task.triggered_by : null;
    if (!by?.startsWith('campaign:')) return false;
    const c = await this.#d.db.selectFrom('campaigns').select('settings').where('id', '=', by.slice('campaign:'.length)).where('org_id', '=', this.#task.org_id).executeTakeFirst();
    return c?.settings.draft === true;
  }

  async #finish(checks: { passed: boolean; attempts: number } | null, summary: string, budgetNote: string | null, changed: boolean): Promise<void> {
    const green = checks === null || checks.passed;
    const continuation = this.#task.continues_task_id !== null;
    await this.#step('done', green && !budgetNote ? 'done' : 'done, but not green');
    await this.#emit({ type: 'result', summary: changed ? summary : `${summary}\n\n(no files changed: nothing was pushed)` });
    const change = changed ? (continuation ? '; the new commits are on the branch' : '; the change is a draft') : continuation ? '; no new commits' : '; no files changed';
    let state: TaskState = 'succeeded';
    let reason: string | null = changed ? null : continuation ? 'no new commits: the agent changed no files, the branch is as it was' : 'the agent changed no files: nothing was pushed';
    if (budgetNote) {
      state = 'failed';
      reason = `${budgetNote}${change}`;
    } else if (!green) {
      state = 'failed';
      reason = `the checks still fail after ${checks!.attempts} attempt(s)${change}`;
    }
    await this.#update({ state, state_reason: reason, finished_at: new Date() });
    await this.#emit({ type: 'state', state, reason });
  }

  /**
   * The branch and change request of the task this one continues (the first of its chain:
   * triggers/tasks.ts). A task that pushed nothing cannot be continued.
   */
  async #continued(id: string): Promise<{ branch: string; changeRequest: ChangeRequest }> {
    const row = await this.#d.db.selectFrom('tasks').select(['branch', 'change_request']).where('id', '=', id).where('org_id', '=', this.#task.org_id).executeTakeFirst();
    if (!row?.branch || !row.change_request) throw new TaskEnd('failed', `task ${id}, which this one continues, left no branch with a change request: there is nothing to add to; start a new task`);
    // A plain-git change merged by `berth task approve` is open again with these commits.
    const { mergedSha: _merged, ...changeRequest } = row.change_request;
    return { branch: row.branch, changeRequest };
  }

  /** Clones the repository; a continuation whose branch is gone (merged and deleted) fails saying so. */
  async #clone(o: { url: string; reach: GitReach; dir: string; branch: string | undefined; credentials: GitCredentials }, continued: { branch: string; changeRequest: ChangeRequest } | null) {
    try {
      return await cloneRepo({ ...o, signal: this.#signal });
    } catch (e) {
      if (continued && e instanceof BerthError && e.kind === 'not_found') {
        throw new TaskEnd('failed', `the branch ${continued.branch} of ${changeRequestName(continued.changeRequest)} is no longer in the repository (merged, or deleted?): nothing to add commits to; start a new task. ${e.message}`);
      }
      throw e;
    }
  }

  /**
   * Nothing that carries a secret leaves, in any form the redactor knows. The commit is read
   * back on the host, binary files as text: that is what would be pushed, whatever the
   * sandbox's patch looked like.
   */
  async #assertNoSecrets(repoDir: string, base: string, head: string): Promise<void> {
    const leak = secretsInChange(await diffOf({ dir: repoDir, base, head, text: true }), this.#redactor);
    if (leak) {
      const what = leak.names.map((n) => (n === 'forge credentials' ? 'the forge credentials' : `secret ${n}`)).join(', ');
      throw new TaskEnd('failed', `the change contains ${what} (the value or an encoding of it) in ${leak.files.join(', ')}: nothing was pushed; the environment is kept for a look`);
    }
  }

  /**
   * Pushes a continuation's commit to the branch it continues, as a fast-forward. When someone
   * pushed to that branch while the task ran, the agent's patch is applied again on the new
   * head (a rebase of its one commit) and pushed once more; a patch that does not apply there
   * fails the task and pushes nothing. Resolves to the commit pushed, or null when the new
   * head already holds the change.
   */
  async #pushOnTop(o: { dir: string; repoDir: string; branch: string; reach: GitReach; credentials: GitCredentials; patch: Buffer; message: string; sha: string }): Promise<string | null> {
    const url = this.#task.repo_url;
    const push = (dir: string) => pushBranch({ dir, url, reach: o.reach, branch: o.branch, credentials: o.credentials, signal: this.#signal });
    try {
      await push(o.repoDir);
      return o.sha;
    } catch (e) {
      if (!(e instanceof BerthError && e.kind === 'conflict')) throw e;
    }
    const again = join(o.dir, 'repo-again');
    const fresh = await cloneRepo({ url, reach: o.reach, dir: again, branch: o.branch, credentials: o.credentials, signal: this.#signal });
    await this.#emit({ type: 'log', level: 'warn', message: `${o.branch} moved on the server while the task ran (now at ${fresh.baseSha.slice(0, 12)}): applying this task's change on top of it (the checks ran before)` });
    let commit: Awaited<ReturnType<typeof commitPatch>>;
    try {
      commit = await commitPatch({ dir: again, baseSha: fresh.baseSha, branch: o.branch, patch: o.patch, message: o.message, author: AUTHOR });
    } catch (e) {
      if (!(e instanceof BerthError && e.kind === 'invalid')) throw e;
      throw new TaskEnd('failed', `someone pushed to ${o.branch} while the task ran, and this task's change does not apply on top of their commits: nothing was pushed; ask again to start from the branch as it is now`);
    }
    if (commit.empty) return null;
    await this.#assertNoSecrets(again, fresh.baseSha, commit.sha);
    // Recorded before the push, as the first commit was: a run stopped right after it is adopted, not pushed again.
    await this.#update({ base_sha: fresh.baseSha, head_sha: commit.sha });
    try {
      await push(again);
    } catch (e) {
      if (e instanceof BerthError && e.kind === 'conflict') throw new TaskEnd('failed', `${o.branch} keeps moving on the server (pushed to twice while the task ran): nothing was pushed; ask again once it is quiet`);
      throw e;
    }
    return commit.sha;
  }

  /**
   * Runs one of the task's commands as the one the denial hints name; with failFast, one
   * that only waits on refusals is stopped and its result says so (`stoppedBy`, also its message).
   */
  async #watched<R extends { message?: string | undefined }>(phase: 'setup' | 'agent' | 'check', cmd: string, failFast: boolean, go: (stop?: AbortSignal) => Promise<R>): Promise<R & { stoppedBy?: string }> {
    if (!this.#d.denials) return go();
    // Named in a transcript line the pipeline does not write: redacted here (an agent may inline a value).
    const { result, stopped } = await this.#d.denials.run(this.#task.id, phase, this.#redactor.redact(cmd), failFast, go);
    return stopped ? { ...result, stoppedBy: stopped, message: stopped } : result;
  }

  async #command(phase: 'setup' | 'agent' | 'check', cmd: string, go: (stop?: AbortSignal) => Promise<{ exitCode: number; stdout: Buffer; stderr: Buffer; durationMs: number; timedOut: boolean; message?: string | undefined }>) {
    // The command agent is the agent: it is named in the hints, never stopped for them.
    const r = await this.#watched(phase, cmd, phase !== 'agent', go);
    // What Berth says of how it ended ("killed: out of memory (limit 256m)") closes its output.
    const output = tail(Buffer.concat([r.stdout, r.stderr]));
    const said = r.message ? `${output}${output && !output.endsWith('\n') ? '\n' : ''}[berth: ${r.message}]\n` : output;
    await this.#emit({ type: 'command', phase, cmd, exitCode: r.exitCode, output: said, durationMs: Math.round(r.durationMs), timedOut: r.timedOut, ...(r.message && { message: r.message }) });
    return r;
  }

  /**
   * Builds the devcontainer's Dockerfile and features (reused while nothing that goes into it
   * changed); the build log goes to the transcript in batches. Returns the image's name.
   */
  async #buildImage(spec: WorkSpec, repoDir: string, project: string): Promise<string> {
    if (!this.#d.images) throw new TaskEnd('failed', 'this runner does not build devcontainer images: name an image in devcontainer.json or the project settings');
    await this.#step('provisioning', 'building the devcontainer image');
    let lines: string[] = [];
    const flush = () => {
      if (lines.length) void this.#emit({ type: 'log', level: 'info', message: tail(lines.join('\n'), 8 * 1024) });
      lines = [];
    };
    const timer = setInterval(flush, 2_000);
    try {
      // On the runner that claimed the task: the environment it makes there starts from the image.
      const runner = await this.#d.images.runners.resolve(this.#task.runner_id, 'the task');
      const built = await buildSpecImage(this.#d.images, {
        orgId: this.#task.org_id,
        project,
        runner,
        repoDir,
        spec,
        signal: this.#signal,
        onLog: (line) => {
          lines.push(this.#redactor.redact(line));
          if (lines.length >= 100) flush();
        },
      });
      flush();
      await this.#emit({ type: 'log', level: 'info', message: `image ${built!.name} ${built!.reused ? '(unchanged since it was built)' : 'built'}` });
      return built!.name;
    } catch (err) {
      flush();
      this.#signal.throwIfAborted();
      throw new TaskEnd('failed', `the devcontainer image could not be built: ${(err as Error).message}`);
    } finally {
      clearInterval(timer);
    }
  }

  /** A task started over after its runner went offline gets a new name: the old environment is lost on that runner, not removable. */
  #environmentName(): string {
    const task = this.#task;
    return `task-${task.id.slice(5)}${task.attempts ? `-${task.attempts + 1}` : ''}`;
  }

  /**
   * The environment from the project's prebuild (a warm one first), its checkout brought from
   * the prebuild's commit to the task's, and the incremental setup steps whose paths changed.
   * Null when it cannot be made there (an image digest moved, say): the task starts fresh.
   */
  async #fromPrebuild(choice: Extract<PrebuildChoice, { prebuild: unknown }>, spec: WorkSpec, project: ProjectRow, at: { dir: string; repoDir: string; root: string; branch: string; base: string }): Promise<{ env: string; rerun: string[] } | null> {
    const name = this.#environmentName();
    // The catch-up bundle is host-side work: made while the environment is claimed or made.
    const making = catchUpInput(at.repoDir, at.dir, choice.commit, at.base);
    making.catch(() => {});
    try {
      return await this.#fromPrebuildWith(making, choice, spec, project, name, at);
    } finally {
      await making.then((input) => input.done(), () => {});
    }
  }

  async #fromPrebuildWith(making: ReturnType<typeof catchUpInput>, choice: Extract<PrebuildChoice, { prebuild: unknown }>, spec: WorkSpec, project: ProjectRow, name: string, at: { dir: string; repoDir: string; root: string; branch: string; base: string }): Promise<{ env: string; rerun: string[] } | null> {
    const task = this.#task;
    const p = choice.prebuild;
    await this.#d.environments.remove(this.#scope, name).catch(() => {});
    let env = await this.#d.warmPools?.claim({ scope: this.#scope, projectId: project.id, prebuildId: p.id, name, taskId: task.id }).catch(() => undefined);
    const warm = env !== undefined;
    if (!env) {
      try {
        // The image is the snapshot's: the body's is left out.
        const { image: _image, ...body } = workEnvironmentBody(spec, { name, project: project.id });
        const created = await this.#d.snapshots!.createEnvironment(this.#scope, p.snapshot_id!, body);
        env = created.id;
      } catch (err) {
        this.#signal.throwIfAborted();
        await this.#emit({ type: 'log', level: 'warn', message: `not from prebuild ${p.id}: its environment could not be made (${(err as Error).message})` });
        return null;
      }
    }
    this.#environmentId = env;
    await this.#update({ environment_id: env });
    const input = await making;
    const r = await runIn(this.#d.environments, this.#scope, env, ['sh', '-c', CATCH_UP_SCRIPT, 'sh', input.mode, at.branch, at.base], { cwd: at.root, stdin: input.stdin(), redact: false, signal: this.#signal });
    if (r.exitCode !== 0) throw new TaskEnd('failed', `could not bring the prebuild's checkout to ${at.base.slice(0, 12)}: ${tail(r.stderr, 2000).trim()}`);
    const decisions = planIncremental(spec.incremental ?? [], choice.changed);
    const said = decisions.map((d) => `${d.rerun ? 'reruns' : 'skips'} \`${d.run}\` (${d.why})`).join(', ');
    await this.#emit({
      type: 'log',
      level: 'info',
      message: `from prebuild ${p.id} at ${choice.commit.slice(0, 12)}${warm ? ' (a warm environment)' : ''}: ${choice.ahead} commit(s) ahead, ${choice.changed.length} file(s) changed${said ? `; ${said}` : '; no incremental setup steps'}`,
    });
    return { env, rerun: decisions.filter((d) => d.rerun).map((d) => d.run) };
  }

  async #provision(spec: WorkSpec, project: string | undefined): Promise<string> {
    const task = this.#task;
    const name = this.#environmentName();
    // A run that was interrupted after making its environment starts over with a new one.
    await this.#d.environments.remove(this.#scope, name).catch(() => {});
    // Made as the task, so it is the task's to use and its owner's (ownership.ts); on the runner
    // that claimed the task: its worker counts the task against that runner's concurrency.
    // A one-off task's extra domains were an admin's to give (tasks/service.ts): added to the org's allow list as it is now.
    const extra = !task.project_id && task.one_off?.allowDomains?.length ? await oneOffAllowList(this.#d.db, task.org_id, task.one_off.allowDomains) : null;
    const body = { ...workEnvironmentBody(spec, { name, project }), ...(extra && { allowDomains: extra.allowDomains }) };
    const created = await this.#d.environments.create(this.#scope, body, { runnerId: task.runner_id ?? undefined, ...(extra && { mayWiden: true, role: 'admin' as const, presets: extra.presets }) });
    this.#environmentId = created.id;
    await this.#update({ environment_id: created.id });
    await this.#emit({ type: 'log', level: 'info', message: `environment ${created.name} (${created.id}) is running` });
    return created.id;
  }

  async #copyIn(repoDir: string, root: string, user: string | null): Promise<void> {
    const r = await copyRepoIn(this.#d.environments, this.#scope, this.#environmentId!, { repoDir, root, user, signal: this.#signal });
    if (!r.ok) throw new TaskEnd('failed', `could not copy the repository into the environment: ${tail(r.stderr, 2000).trim()}`);
  }

  async *#builtinAgent(workspace: SandboxWorkspace, spec: WorkSpec): AsyncGenerator<AgentOutcome, AgentOutcome, string> {
    const task = this.#task;
    const endpoint = this.#model?.endpoint;
    const model = endpoint ? modelClientFor(endpoint) : modelClientFromEnv(this.#d.modelEnv, { model: task.model ?? undefined });
    const deadline = this.#deadline();
    const agent = new BuiltinAgent({
      model,
      workspace,
      goal: task.goal,
      context: `The repository is at ${workspace.root}.${spec.check ? ` The check command is \`${spec.check}\`; it must pass.` : ''}`,
      budget: { maxSteps: task.budget.maxSteps, maxTokens: task.budget.maxTokens, maxCostUsd: task.budget.maxCostUsd, deadline },
      signal: this.#signal,
      onEvent: (e) => {
        if (e.type === 'model') this.#addUsage(e.usage);
        void this.#emit(e);
      },
    });
    let instruction = task.goal;
    for (;;) {
      const outcome = await agent.run(instruction);
      const next = yield outcome;
      if (next === undefined) return outcome;
      instruction = next;
    }
  }

  async *#commandAgent(env: string, root: string, envVars: Record<string, string>): AsyncGenerator<AgentOutcome, AgentOutcome, string> {
    const task = this.#task;
    const run = (cmd: string[], o: RunOptions = {}) => runIn(this.#d.environments, this.#scope, env, cmd, { signal: this.#signal, ...o });
    const session = await this.#openGateway(env);
    try {
      for (let followUp: string | undefined; ; ) {
        const vars = { ...envVars, ...session?.env, BERTH_GOAL: task.goal, ...(followUp ? { BERTH_FEEDBACK: followUp } : {}) };
        const r = await this.#command('agent', task.command!, () => run(['sh', '-c', task.command!], { cwd: root, env: vars, timeoutMs: this.#remainingMs() }));
        const outcome: AgentOutcome = r.timedOut
          ? { kind: 'budget', which: 'time', message: 'the task ran out of time' }
          : r.exitCode === 0
            ? { kind: 'finished', summary: `\`${task.command}\` finished.` }
            : { kind: 'failed', reason: `\`${task.command}\` exited with ${r.exitCode}${r.message ? ` (${r.message})` : ''}` };
        followUp = yield outcome;
        if (followUp === undefined) return outcome;
      }
    } finally {
      await session?.close();
    }
  }

  /**
   * The LLM gateway for a command agent. An environment without the Berth agent as PID 1
   * (no C compiler on the runner, BERTH_AGENT=off) cannot run the relay: the command
   * still runs, without model access, and the transcript says why.
   */
  async #openGateway(env: string) {
    if (!this.#d.gateway) return null;
    try {
      return await this.#d.gateway.open({
        orgId: this.#task.org_id,
        taskId: this.#task.id,
        environmentId: env,
        maxTokens: this.#task.budget.maxTokens,
        upstreams: this.#model?.endpoint ? { [this.#model.endpoint.provider]: { baseUrl: this.#model.endpoint.baseUrl, apiKey: this.#model.endpoint.apiKey, address: this.#model.endpoint.address } } : undefined,
        onCall: (e) => {
          this.#addUsage(e.usage);
          void this.#emit(e);
        },
      });
    } catch (err) {
      this.#signal.throwIfAborted();
      await this.#emit({ type: 'log', level: 'warn', message: `the LLM gateway is not available in this environment (${(err as Error).message}): the command runs without model access` });
      return null;
    }
  }

  /**
   * Which model settings the task runs with (models/service.ts has the order), written to the
   * task so it shows them. The chosen key joins the redactor: it never appears in an event.
   */
  async #resolveModel(project: ProjectRow | undefined): Promise<void> {
    let plan: TaskModelPlan;
    try {
      plan = await this.#d.models.forTask(this.#task, project);
    } catch (e) {
      throw new TaskEnd('failed', `the task's model cannot be used: ${(e as Error).message}`);
    }
    this.#model = plan;
    if (plan.endpoint) {
      this.#secretValues.push({ name: plan.endpoint.keySecret, value: plan.endpoint.apiKey });
      this.#redactor = new Redactor(this.#secretValues);
    }
    const builtin = this.#task.agent === 'builtin';
    await this.#update({
      ...(builtin ? { model: plan.model, model_default: plan.model !== null && (plan.source === 'org' || plan.source === 'instance') } : {}),
      model_provider: builtin ? plan.provider : (plan.endpoint?.provider ?? null),
      model_source: builtin ? plan.source : null,
      model_settings: plan.settings,
    });
    if (plan.endpoint) {
      const whose = plan.settings === 'project' ? "the project's" : "the org's";
      await this.#emit({ type: 'log', level: 'info', message: builtin ? `model ${plan.model} over ${plan.provider}, by ${whose} model settings` : `the LLM gateway sends ${plan.endpoint.provider} calls by ${whose} model settings` });
    }
  }

  #addUsage(u: Usage): void {
    this.#usage.inputTokens += u.inputTokens;
    this.#usage.outputTokens += u.outputTokens;
    this.#usage.costUsd += u.costUsd;
    const snapshot = { ...this.#usage };
    this.#persistUsage = this.#persistUsage.then(() =>
      this.#d.db
        .updateTable('tasks')
        .set({ input_tokens: snapshot.inputTokens, output_tokens: snapshot.outputTokens, cost_usd: snapshot.costUsd })
        .where('id', '=', this.#task.id)
        .where('lease', '=', this.#task.lease)
        .execute(),
    ).catch(() => {});
  }

  /**
   * Leave for git to reach the task's repository, and the forge's API URL checked by the same
   * address rules: a task stored before them, or a name that points elsewhere now, fails here.
   */
  async #reach(settings: ForgeSettings, project: ProjectRow | undefined) {
    try {
      await assertOwnRepository(this.#d.db, this.#d.repos, this.#task, project);
      if (settings.apiUrl) await this.#d.repos.reachApi(settings.apiUrl);
      return await this.#d.repos.reach(this.#task.repo_url);
    } catch (e) {
      throw new TaskEnd('failed', `the repository cannot be reached from this server: ${(e as Error).message}`);
    }
  }

  async #forgeAuth(settings: ForgeSettings): Promise<ForgeAuth> {
    const byName = async (name: string) => {
      const found = (await this.#d.secrets.forgeSecret(this.#task.org_id, this.#task.project_id, name)) ?? null;
      if (found === null) throw new TaskEnd('failed', `${this.#task.project_id ? "the project's forge settings name" : "the task's forge settings name"} secret '${name}', which does not exist: \`berth secret set ${name}\``);
      return found;
    };
    if (settings.app) return { app: { appId: settings.app.appId, installationId: settings.app.installationId, privateKey: await byName(settings.app.privateKeySecret) } };
    if (settings.tokenSecret) return { token: await byName(settings.tokenSecret) };
    return null;
  }

  /** The deploy key an SSH repository is reached with (forge.deployKeySecret), or null. */
  async #deployKey(settings: ForgeSettings): Promise<string | null> {
    if (!settings.deployKeySecret) return null;
    const key = await this.#d.secrets.forgeSecret(this.#task.org_id, this.#task.project_id, settings.deployKeySecret);
    if (key === null) throw new TaskEnd('failed', `the project's forge settings name secret '${settings.deployKeySecret}' as the deploy key, which does not exist: \`berth secret set ${settings.deployKeySecret} --from-file KEY\``);
    return key;
  }

  #deadline(): number {
    const started = this.#task.started_at ? new Date(this.#task.started_at).getTime() : Date.now();
    return started + this.#task.budget.timeoutMs;
  }

  #remainingMs(): number {
    return Math.max(1_000, this.#deadline() - Date.now());
  }

  #taskUrl(): string {
    return `${this.#d.publicUrl()}/tasks/${this.#task.id}`;
  }
}

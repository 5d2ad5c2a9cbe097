// Denials that help instead of stalling. When a task's environment keeps asking for a
// destination its policy refuses, the transcript says so once, with what would allow it;
// and a setup or check command that is only waiting out its tool's retries is stopped
// (an agent's tool command too: the agent gets the hint as the command's result).
import type { Logger } from 'pino';
import { formatDuration } from '../../shared/units.ts';
import type { DenialFix, TaskEventData } from '../../shared/tasks.ts';
import type { Db } from '../db/index.ts';
import { DenialStorms, type DenialObserver, type Storm, type StormSettings } from '../network-events/index.ts';
import { domainMatches, PRESET_NAMES, PRESETS, type PolicyService, type PolicyTarget } from '../policy/index.ts';
import type { TaskEvents } from './events.ts';

type Phase = 'setup' | 'agent' | 'check';

/** The hint as the transcript has it. */
export type DenialHint = Extract<TaskEventData, { type: 'denials' }>;

interface Current {
  phase: Phase;
  cmd: string;
}

/** The policy field each fix adds to, and the `berth policy set` flag that sets it (it replaces the list: the command names all). */
const FLAGS = { presets: '--preset', allowDomains: '--allow-domain', allowPorts: '--port', allowMethods: '--method' } as const;

/** What a hostile host name could do to a terminal or a shell line: control characters out, quoted when not plain. */
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?').slice(0, 253);
const shellWord = (s: string) => (/^[A-Za-z0-9_.:*/@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

export class DenialAdvisor implements DenialObserver {
  readonly #storms: DenialStorms;
  readonly #db: Db;
  readonly #events: TaskEvents;
  readonly #policies: Pick<PolicyService, 'show'>;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #checkEveryMs: number;
  /** The command each task is running now (a task runs one at a time). */
  readonly #current = new Map<string, Current>();
  /** Each storm's hint, once written. */
  readonly #hints = new Map<Storm, Promise<DenialHint | null>>();
  /** Writes the network events still queued (the recorder's flush), so a command's refusals are counted when it ends. */
  #flushEvents: () => Promise<void> = async () => {};

  /** @param opts.checkEveryMs how often a running command's storms are looked at (fail-fast). */
  constructor(opts: { db: Db; events: TaskEvents; policies: Pick<PolicyService, 'show'>; logger: Logger; settings: StormSettings; now?: () => number; checkEveryMs?: number }) {
    this.#storms = new DenialStorms(opts.settings);
    this.#db = opts.db;
    this.#events = opts.events;
    this.#policies = opts.policies;
    this.#log = opts.logger;
    this.#now = opts.now ?? Date.now;
    this.#checkEveryMs = opts.checkEveryMs ?? 1_000;
  }

  /** The recorder is made after the advisor (it reports to it): it says how to flush here. */
  flushWith(flush: () => Promise<void>): void {
    this.#flushEvents = flush;
  }

  get settings(): StormSettings {
    return this.#storms.settings;
  }

  refused(taskId: string, environmentId: string, d: { host: string; port: number; rule: string }, now: number): void {
    const storm = this.#storms.refused(taskId, environmentId, d, now);
    // Said as it stands now: the count goes on growing while the hint is written.
    if (storm) this.#hints.set(storm, this.#report({ ...storm }, this.#current.get(taskId) ?? null));
  }

  allowed(taskId: string, now: number): void {
    this.#storms.allowed(taskId, now);
  }

  /**
   * Runs one of the task's commands as the one it is running now (the hint names it).
   * With failFast, `go`'s stop signal fires when a storm has gone on for the fail-fast
   * window with nothing let through; `stopped` then says why, with the hint.
   */
  async run<T>(taskId: string, phase: Phase, cmd: string, failFast: boolean, go: (stop: AbortSignal) => Promise<T>): Promise<{ result: T; stopped: string | null }> {
    const current = { phase, cmd };
    this.#current.set(taskId, current);
    const stop = new AbortController();
    let storm: Storm | null = null;
    const timer = failFast && this.settings.failFastMs !== null
      ? setInterval(() => {
          storm = this.#storms.stuck(taskId, this.#now());
          if (storm) {
            clearInterval(timer);
            stop.abort();
          }
        }, this.#checkEveryMs)
      : undefined;
    let result: T;
    try {
      result = await go(stop.signal);
    } finally {
      clearInterval(timer);
      // The hints of this command's refusals come before whatever the task says next (its end).
      await this.#flushEvents().catch(() => {});
      await Promise.all([...this.#hints].filter(([s]) => s.taskId === taskId).map(([, hint]) => hint));
      if (this.#current.get(taskId) === current) this.#current.delete(taskId);
    }
    if (!storm) return { result, stopped: null };
    const s: Storm = storm;
    const hint = await (this.#hints.get(s) ?? Promise.resolve(null));
    const what = `${s.count} refusals of ${printable(s.host)}:${s.port} in ${formatDuration(Math.max(0, s.lastAt - s.since))}, nothing let through meanwhile`;
    return { result, stopped: `stopped by Berth after ${what}: ${hint ? hint.message : `refused by ${s.rule}`}` };
  }

  /** The task ended: its counts go. */
  forget(taskId: string): void {
    this.#storms.forget(taskId);
    this.#current.delete(taskId);
    for (const s of this.#hints.keys()) if (s.taskId === taskId) this.#hints.delete(s);
  }

  async #report(s: Storm, current: Current | null): Promise<DenialHint | null> {
    try {
      const hint = await this.hintFor(s, current);
      await this.#events.append(s.taskId, hint);
      return hint;
    } catch (err) {
      this.#log.error({ err, task: s.taskId }, 'could not write the hint for a denial storm');
      return null;
    }
  }

  /** The transcript's line for a storm: who kept asking, what refused it, and what would allow it. */
  async hintFor(s: Storm, current: Current | null): Promise<DenialHint> {
    const host = printable(s.host);
    const fix = await this.#fixFor(s, host);
    const who = current ? `\`${clip(current.cmd.replace(/\s+/g, ' ').replace(/[\u0000-\u001f\u007f-\u009f`]/g, '?').trim(), 120)}\` (${current.phase})` : 'the environment';
    const how = fix.kind === 'none' ? fix.advice : fix.kind === 'trusted-network' ? `${host} resolves to a private address; if it is on your company's network, the instance administrator can trust it: \`${fix.command}\`` : `allow it with \`${fix.command}\``;
    const message = `${who} tried to reach ${host}:${s.port} ${s.count} times in ${formatDuration(Math.max(0, s.lastAt - s.since))}: refused by ${s.rule}; ${how}`;
    return { type: 'denials', host, port: s.port, rule: s.rule, count: s.count, since: new Date(s.since).toISOString(), phase: current?.phase ?? null, command: current ? clip(current.cmd.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '?'), 500) : null, message, fix };
  }

  async #fixFor(s: Storm, host: string): Promise<DenialFix> {
    const rule = s.rule;
    const privateAddress = /^deny:private-address:(.+)$/.exec(rule);
    if (privateAddress) {
      const address = privateAddress[1]!;
      const cidr = `${address}/${address.includes(':') ? 128 : 32}`;
      return { kind: 'trusted-network', cidr, command: `berth up --trusted-network ${shellWord(cidr)}` };
    }
    if (rule.startsWith('deny:host-address:')) return { kind: 'none', advice: `${host} resolves to this runner's own address, which environments never reach` };
    if (rule === 'deny:ip-address') return { kind: 'none', advice: 'raw addresses are never reachable: use the host name, and allow that' };
    if (rule.startsWith('deny:firewall:')) return { kind: 'none', advice: 'direct connections are refused: the tool must go through the egress proxy (HTTP_PROXY and HTTPS_PROXY are set in the environment)' };
    if (rule.startsWith('error:resolve')) return { kind: 'none', advice: `${host} does not resolve: check the name` };
    const scoped = /^deny:(?:org|project|environment|default):(not-allowed|port:(\d+)|method:([A-Z]+))$/.exec(rule);
    if (!scoped) return { kind: 'none', advice: `\`berth env network ${s.environmentId} --denied\` lists what was refused` };
    if (scoped[1] === 'not-allowed') {
      const preset = PRESET_NAMES.find((name) => PRESETS[name].some((pattern) => domainMatches(pattern, s.host)));
      return preset ? this.#policyFix(s, 'presets', preset, `Use preset ${preset}`) : this.#policyFix(s, 'allowDomains', s.host, `Allow ${host}`);
    }
    if (scoped[2]) return this.#policyFix(s, 'allowPorts', Number(scoped[2]), `Allow port ${scoped[2]}`);
    return this.#policyFix(s, 'allowMethods', scoped[3]!, `Allow method ${scoped[3]}`);
  }

  /** A change to the task's project's policy (the org's without a project), with the whole list the command must name. */
  async #policyFix(s: Storm, field: keyof typeof FLAGS, add: string | number, label: string): Promise<DenialFix> {
    const task = await this.#db
      .selectFrom('tasks')
      .leftJoin('projects', 'projects.id', 'tasks.project_id')
      .select(['tasks.org_id', 'projects.name as project'])
      .where('tasks.id', '=', s.taskId)
      .executeTakeFirst();
    const project = task?.project ?? null;
    let values: (string | number)[] = [];
    if (task) {
      const target: PolicyTarget = project ? { kind: 'project', ref: project } : { kind: 'org' };
      try {
        const { effective } = await this.#policies.show(task.org_id, target);
        // No ports set means the defaults, 80 and 443, which the new list must keep.
        values = field === 'allowPorts' ? (effective.allowPorts ?? [80, 443]) : field === 'allowMethods' ? (effective.allowMethods ?? []) : effective[field];
      } catch (err) {
        this.#log.warn({ err, task: s.taskId }, 'could not read the policy a denial hint adds to');
      }
    }
    if (!values.includes(add)) values = [...values, add];
    const command = `berth policy set${project ? ` --project ${shellWord(project)}` : ''} ${FLAGS[field]} ${values.map((v) => shellWord(String(v))).join(' ')}`;
    return { kind: 'policy', project, field, add, label: `${label} for ${project ? `project ${project}` : 'the org'}`, command };
  }
}

import type { Command } from 'commander';
import {
  TEMPLATE_FIELD,
  type CreateWebhookTriggerBody,
  type WebhookTrigger,
  type WebhookTriggerDetail,
  type WebhookTriggerList,
  type WebhookTriggerWithSecret,
} from '../../shared/api-webhook-triggers.ts';
import type { ApiClient } from '../client.ts';
import { age, emit, printJson, printTable, usageError } from '../output.ts';

type Client = () => ApiClient;

/** `berth trigger`: generic webhooks that start tasks. */
export function triggerCommands(program: Command, client: Client): void {
  const trigger = program.command('trigger').description('generic webhooks: a URL and a secret that any system (CI, Sentry, PagerDuty) posts JSON to, starting a task');
  const path = (rest = '') => client().orgPath(`triggers${rest}`);

  trigger
    .command('create')
    .description('make a trigger: prints its URL, its secret (shown this once) and a curl example')
    .requiredOption('--name <name>', 'a name for it (lower-case letters, digits and dashes)')
    .requiredOption('--project <project>', 'the project its tasks run on')
    .requiredOption('--goal-template <template>', 'the goal, with {{body.a.b}}, {{body.items.0.name}} or {{headers.x-name}} filled in from each delivery')
    .option('--auth <auth>', "'hmac' (the sender signs the body, X-Berth-Signature-256) or 'bearer' (Authorization: Bearer SECRET)", 'hmac')
    .option('--rate <rate>', 'deliveries it takes, e.g. 60/min or 2/s (more get 429)', '60/min')
    .option('--json', 'print JSON, the secret included')
    .action(async (o) => {
      if (o.auth !== 'hmac' && o.auth !== 'bearer') throw usageError(`--auth takes hmac or bearer, not '${o.auth}'`);
      const body: CreateWebhookTriggerBody = { name: o.name, project: o.project, goalTemplate: o.goalTemplate, auth: o.auth, ratePerMinute: perMinute(o.rate) };
      const made = await client().request<WebhookTriggerWithSecret>('POST', path(), body);
      emit(o, made, () => withSecret(made));
    });

  trigger
    .command('list')
    .alias('ls')
    .description("the org's triggers: names, projects, URLs (never their secrets)")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<WebhookTriggerList>('GET', path());
      if (o.json) return printJson(items);
      printTable(['NAME', 'PROJECT', 'AUTH', 'RATE', 'URL', 'AGE'], items.map((t) => [t.name, t.project, t.auth, `${t.ratePerMinute}/min`, t.url, age(t.createdAt)]));
    });

  trigger
    .command('show <trigger>')
    .description('a trigger (id or name) and its latest deliveries with what came of them')
    .option('--json', 'print JSON')
    .action(async (ref: string, o) => {
      const t = await client().request<WebhookTriggerDetail>('GET', path(`/${encodeURIComponent(ref)}`));
      if (o.json) return printJson(t);
      process.stdout.write(describe(t));
      if (!t.deliveries.length) return void process.stdout.write('\nNo deliveries yet.\n');
      process.stdout.write('\n');
      printTable(['DELIVERY', 'AGE', 'TASK', 'OUTCOME'], t.deliveries.map((d) => [d.delivery, age(d.receivedAt), d.taskId ?? '-', d.outcome ?? '(being handled)']));
    });

  trigger
    .command('rm <trigger>')
    .alias('remove')
    .description('remove a trigger: its URL answers 404 from now on')
    .option('--json', 'print JSON')
    .action(async (ref: string, o) => {
      const removed = await client().request<WebhookTrigger>('DELETE', path(`/${encodeURIComponent(ref)}`));
      emit(o, removed, `trigger ${removed.name} (${removed.id}) removed`);
    });

  trigger
    .command('rotate <trigger>')
    .description('give a trigger a new secret (shown this once); the old one stops working at once')
    .option('--json', 'print JSON, the secret included')
    .action(async (ref: string, o) => {
      const rotated = await client().request<WebhookTriggerWithSecret>('POST', path(`/${encodeURIComponent(ref)}/rotate`), {});
      emit(o, rotated, () => withSecret(rotated));
    });
}

/** `60`, `60/min`, `2/s` as deliveries a minute. */
export function perMinute(rate: string): number {
  const m = /^(\d+)\s*(?:\/\s*(s|sec|second|m|min|minute))?$/i.exec(rate.trim());
  const n = m ? Number(m[1]) * (/^s/i.test(m[2] ?? '') ? 60 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw usageError(`--rate takes deliveries a minute or a second, such as 60/min or 2/s, not '${rate}'`);
  return n;
}

function describe(t: WebhookTrigger): string {
  return [
    `Trigger   ${t.name} (${t.id})`,
    `Project   ${t.project}`,
    `URL       ${t.url}`,
    `Auth      ${t.auth === 'hmac' ? 'hmac (X-Berth-Signature-256: sha256=HMAC-SHA256 of the body)' : 'bearer (Authorization: Bearer SECRET)'}`,
    `Rate      ${t.ratePerMinute}/min`,
    `Goal      ${t.goalTemplate}`,
    `Created   ${age(t.createdAt)} ago by ${t.createdBy}`,
    '',
  ].join('\n');
}

function withSecret(t: WebhookTriggerWithSecret): string {
  return `${describe(t)}
Secret    ${t.secret}
          (shown this once: keep it where the sender keeps secrets; \`berth trigger rotate ${t.name}\` makes a new one)

Try it:
${curlExample(t)}
`;
}

/** A curl command that sends a body with every field the template names. */
function curlExample(t: WebhookTriggerWithSecret): string {
  const body = JSON.stringify(sampleBody(t.goalTemplate)).replaceAll("'", "'\\''");
  if (t.auth === 'bearer') {
    return `curl -X POST '${t.url}' \\
  -H 'Authorization: Bearer ${t.secret}' \\
  -H 'Content-Type: application/json' \\
  -d '${body}'`;
  }
  return `BODY='${body}'
SIG=$(printf %s "$BODY" | openssl dgst -sha256 -hmac '${t.secret}' | sed 's/^.* //')
curl -X POST '${t.url}' \\
  -H "X-Berth-Signature-256: sha256=$SIG" \\
  -H 'Content-Type: application/json' \\
  -d "$BODY"`;
}

/** `{{body.alert.title}}` and `{{body.items.0.name}}` as `{"alert":{"title":"…"},"items":[{"name":"…"}]}`. */
function sampleBody(template: string): unknown {
  const root: Record<string, unknown> = {};
  for (const m of template.matchAll(TEMPLATE_FIELD)) {
    const keys = m[1]!.split('.');
    if (keys.shift() !== 'body' || !keys.length) continue;
    let at: Record<string, unknown> = root;
    keys.forEach((key, i) => {
      const last = i === keys.length - 1;
      const next = last ? `example ${keys.join('.')}` : /^\d+$/.test(keys[i + 1]!) ? [] : {};
      if (at[key] === undefined || (!last && typeof at[key] !== 'object')) at[key] = next;
      at = at[key] as Record<string, unknown>;
    });
  }
  return root;
}

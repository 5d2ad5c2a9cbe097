import type { Command } from 'commander';
import type { OrgSettings, OrgSettingsPatch } from '../../shared/api.ts';
import type { ApiClient } from '../client.ts';
import { age, CliError, emit, printJson, printTable, stateWord, usageError } from '../output.ts';

type Client = () => ApiClient;
const ROLES = ['owner', 'admin', 'member', 'viewer'];

function role(value: string): string {
  if (!ROLES.includes(value)) throw usageError(`--role must be one of ${ROLES.join(', ')}, got '${value}'`);
  return value;
}

interface Org {
  id: string;
  name: string;
  role: string;
}
interface Member {
  userId: string;
  email: string;
  name: string;
  role: string;
  createdAt: string;
  pending?: boolean;
}
interface Invite {
  id: string;
  url: string;
  code: string;
  expiresAt: string;
}
interface Token {
  id: string;
  name: string;
  kind: string;
  role: string | null;
  userId: string | null;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
  token?: string;
}

export function orgCommands(program: Command, client: Client): void {
  const org = program.command('org').description('orgs you belong to');
  org
    .command('list')
    .alias('ls')
    .description('the orgs you belong to, with your role in each')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: Org[] }>('GET', '/api/orgs');
      if (o.json) return printJson(items);
      printTable(['ID', 'NAME', 'ROLE'], items.map((i) => [i.id, i.name, i.role]));
    });
  org
    .command('create <name>')
    .option('--json', 'print JSON')
    .description('create an org; you become its owner')
    .action(async (name: string, o) => {
      const created = await client().request<Org>('POST', '/api/orgs', { name });
      if (o.json) printJson(created);
      else process.stdout.write(`${created.id} ${created.name}\n`);
    });

  const printSettings = (settings: OrgSettings) => process.stdout.write(`auto-start  ${settings.autoStart ? 'on' : 'off'}\n`);
  org
    .command('show')
    .description("the chosen org's settings")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const settings = await client().request<OrgSettings>('GET', client().orgPath('settings'));
      if (o.json) printJson(settings);
      else printSettings(settings);
    });
  org
    .command('set')
    .description("change the chosen org's settings (owners and admins)")
    .option('--auto-start <on|off>', 'start a stopped environment by itself when exec, a terminal or a copy reaches it (default on)', (v) => {
      if (v !== 'on' && v !== 'off') throw new CliError(`--auto-start is on or off, got '${v}'`, 2);
      return v === 'on';
    })
    .option('--json', 'print JSON')
    .action(async (o) => {
      const patch: OrgSettingsPatch = { autoStart: o.autoStart };
      if (Object.values(patch).every((v) => v === undefined)) throw new CliError('nothing to set: give --auto-start on|off', 2);
      const settings = await client().request<OrgSettings>('PATCH', client().orgPath('settings'), patch);
      if (o.json) printJson(settings);
      else printSettings(settings);
    });

  const member = program.command('member').description('members of an org and their roles');
  member
    .command('list')
    .alias('ls')
    .description("the org's members and their roles")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: Member[] }>('GET', client().orgPath('members'));
      if (o.json) return printJson(items);
      printTable(['EMAIL', 'NAME', 'ROLE', 'SINCE', 'STATE'], items.map((m) => [m.email, m.name, m.role, age(m.createdAt), m.pending ? 'invited' : '-']));
    });
  member
    .command('add <email>')
    .alias('set')
    .description('add a member, or change their role')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`, role)
    .option('--name <name>', 'display name for a new user')
    .option('--invite', 'also make a one-time invite link for them to sign in with (no identity provider needed)')
    .option('--expires <duration>', 'how long the invite link works (default 7d, at most 30d)')
    .option('--json', 'print JSON')
    .action(async (email: string, o) => {
      if (o.expires && !o.invite) throw new CliError('--expires is for the invite link: add --invite', 2);
      const m = await client().request<Member>('PUT', client().orgPath(`members/${encodeURIComponent(email)}`), { role: o.role, name: o.name });
      if (!o.invite) {
        if (o.json) printJson(m);
        else process.stdout.write(`${m.email} ${m.role}\n`);
        return;
      }
      const invite = await client().request<Invite>('POST', client().orgPath(`members/${encodeURIComponent(email)}/invite`), { expires: o.expires });
      if (o.json) return printJson({ ...m, pending: true, invite });
      process.stderr.write(`${m.email} ${m.role}, invited: send them this link; it works once, until ${invite.expiresAt} (\`berth login URL --invite CODE\` takes it too):\n`);
      process.stdout.write(`${invite.url}\n`);
    });
  member
    .command('rm <email>')
    .description('remove a member (and revoke the org tokens they made)')
    .option('--json', 'print JSON: { email, removed }')
    .action(async (email: string, o) => {
      await client().request('DELETE', client().orgPath(`members/${encodeURIComponent(email)}`));
      emit(o, { email, removed: true }, `${email} removed`);
    });

  const token = program.command('token').description('API tokens for an org');
  token
    .command('create')
    .description('create a token; it is shown once, only its hash is kept')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')} (at most your own)`, role)
    .option('--name <name>', 'what the token is for')
    .option('--expires <duration>', 'lifetime, e.g. 30d (default: no expiry)')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const t = await client().request<Token>('POST', client().orgPath('tokens'), { role: o.role, name: o.name, expires: o.expires });
      if (o.json) return printJson(t);
      process.stderr.write(`token ${t.id} (${t.role}${t.expiresAt ? `, expires ${t.expiresAt}` : ''}); it is shown only now:\n`);
      process.stdout.write(`${t.token}\n`);
    });
  token
    .command('list')
    .alias('ls')
    .description("the org's tokens: who made them, their role, when last used (never the token itself)")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: Token[] }>('GET', client().orgPath('tokens'));
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'NAME', 'ROLE', 'CREATED', 'LAST USED', 'EXPIRES', 'STATE'],
        items.map((t) => [
          t.id,
          t.name,
          t.role ?? '-',
          age(t.createdAt),
          t.lastUsedAt ? `${age(t.lastUsedAt)} ago` : 'never',
          t.expiresAt ?? 'never',
          stateWord(t.revokedAt ? 'revoked' : t.expiresAt && Date.parse(t.expiresAt) < Date.now() ? 'expired' : 'active'),
        ]),
      );
    });
  token
    .command('revoke <id>')
    .description('revoke a token: it stops working at once')
    .option('--json', 'print JSON: { id, revoked }')
    .action(async (id: string, o) => {
      await client().request('DELETE', client().orgPath(`tokens/${encodeURIComponent(id)}`));
      emit(o, { id, revoked: true }, `${id} revoked`);
    });
}

// Signing in from the CLI: `berth login` (the identity provider in a browser, a pasted token,
// or a one-time invite), `berth logout` and `berth whoami`. The sign-in is kept in the user's
// own config file (config.ts), readable by them alone.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { delimiter, join } from 'node:path';
import type { Command } from 'commander';
import type { AuthMethods } from '../../shared/api.ts';
import type { Me, SignedIn } from '../../shared/api-auth.ts';
import { ApiClient } from '../client.ts';
import { loginConfigPath, readLoginConfig, removeLoginConfig, writeLoginConfig, type ConfigSource } from '../config.ts';
import { CliError, printJson } from '../output.ts';
import type { ClientConfig } from '../../shared/client-config.ts';

type Client = () => ApiClient;
type Config = () => ClientConfig & { source: ConfigSource };

/** How long `berth login` waits for the browser to come back. */
const BROWSER_WAIT_MS = 10 * 60_000;

export function authCommands(program: Command, client: Client, config: Config, org: () => string | undefined): void {
  program
    .command('login [url]')
    .description('sign in to a control plane: in the browser when it has an identity provider, else with a token or an invite')
    .option('--with-token', 'read an API token from standard input instead of opening the browser')
    .option('--invite <code>', 'accept a one-time invite: the link, or the code after its #')
    .option('--no-browser', 'print the sign-in address instead of opening a browser')
    .option('--print-token', 'print the token the CLI uses now (to paste into the web UI) and change nothing')
    .option('--json', 'print JSON')
    .action(async (urlArg: string | undefined, o: { withToken?: boolean; invite?: string; browser: boolean; printToken?: boolean; json?: boolean }) => {
      if (o.printToken) {
        process.stdout.write(`${config().token}\n`);
        return;
      }
      let invite = o.invite?.trim();
      if (invite?.includes('#')) {
        // The whole link: it names the control plane too.
        const [link, code] = invite.split('#', 2) as [string, string];
        urlArg ??= link.replace(/\/invite\/?$/, '');
        invite = code;
      }
      const url = normalizeUrl(urlArg ?? process.env.BERTH_URL ?? readLoginConfig()?.url);
      const methods = await anonymous<AuthMethods>(url, 'GET', '/api/auth/methods');

      let signedIn: { token: string; madeByLogin: boolean };
      if (invite) {
        const accepted = await anonymous<SignedIn>(url, 'POST', '/api/auth/invite', { code: invite });
        signedIn = { token: accepted.token, madeByLogin: true };
      } else if (methods.oidc.enabled && !o.withToken) {
        signedIn = { token: (await browserSignIn(url, o.browser)).token, madeByLogin: true };
      } else {
        signedIn = { token: await readToken(Boolean(o.withToken)), madeByLogin: false };
      }

      const me = await new ApiClient({ url, token: signedIn.token }).request<Me>('GET', '/api/me').catch((err: unknown) => {
        if (err instanceof CliError && err.exitCode === 4) throw new CliError(`that token was not accepted by ${url} (unknown, revoked or expired): make a new one with \`berth token create\` or ask an admin`, 4);
        throw err;
      });
      const chosen = org();
      if (chosen && !me.orgs.some((m) => m.name === chosen)) {
        throw new CliError(`this token does not act in '${chosen}' (it does in: ${me.orgs.map((m) => m.name).join(', ') || 'none'})`, 2);
      }
      const orgName = chosen ?? (me.orgs.length === 1 ? me.orgs[0]!.name : undefined);
      await forgetPrevious(signedIn.token);
      const path = writeLoginConfig({ url, token: signedIn.token, org: orgName, tokenId: me.token?.id, madeByLogin: signedIn.madeByLogin });
      if (o.json) return printJson({ url, config: path, org: orgName ?? null, ...me });
      const who = me.kind === 'org' ? `an org token (${me.token?.name ?? 'unnamed'})` : `${me.email}`;
      process.stderr.write(
        `Signed in to ${url} as ${who}${me.token?.expiresAt ? `, until ${me.token.expiresAt}` : ''}.\n` +
          (orgName ? `  org: ${orgName}\n` : `  orgs: ${me.orgs.map((m) => m.name).join(', ') || 'none'}: choose one with --org or BERTH_ORG\n`) +
          `  saved in ${path} (readable by you alone); \`berth logout\` forgets it\n`,
      );
    });

  program
    .command('logout')
    .description('forget the sign-in `berth login` saved, revoking the token when login made it')
    .action(async () => {
      const saved = readLoginConfig();
      if (!saved) {
        process.stderr.write(`not signed in with \`berth login\` (no ${loginConfigPath()}): nothing to forget\n`);
        return;
      }
      let revoked = false;
      if (saved.madeByLogin) {
        try {
          await new ApiClient({ url: saved.url, token: saved.token }).request('DELETE', '/api/me/token');
          revoked = true;
        } catch (err) {
          // Already revoked or expired is what logout wanted; anything else is worth a word.
          if (!(err instanceof CliError && err.exitCode === 4)) process.stderr.write(`berth: could not revoke the token at ${saved.url} (${(err as Error).message}); it is forgotten here\n`);
        }
      }
      removeLoginConfig();
      process.stderr.write(
        `Signed out of ${saved.url}: ${revoked ? 'the token was revoked' : saved.madeByLogin ? 'the token was forgotten' : 'the token was forgotten here; you pasted it, so it still works where else it is used (`berth token revoke ID` ends it)'}.\n`,
      );
    });

  program
    .command('whoami')
    .description('who the CLI acts as: user, token, orgs and roles, and where the sign-in comes from')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const c = config();
      const me = await client().request<Me>('GET', '/api/me');
      const from = { environment: 'BERTH_URL and BERTH_TOKEN', 'data-dir': 'the data dir of `berth up` (client.json)', login: `berth login (${loginConfigPath()})` }[c.source];
      if (o.json) return printJson({ url: c.url, source: c.source, org: c.org ?? (me.orgs.length === 1 ? me.orgs[0]!.name : null), ...me });
      const lines = [
        `url:    ${c.url}`,
        me.kind === 'user' ? `user:   ${me.name && me.name !== me.email ? `${me.name} <${me.email}>` : me.email}` : `org token${me.email ? ` made by ${me.email}` : ''}`,
        `token:  ${me.token ? `${me.token.name} (${me.token.kind} token ${me.token.id}, ${me.token.expiresAt ? `expires ${me.token.expiresAt}` : 'no expiry'})` : me.kind}`,
        `orgs:   ${me.orgs.map((m) => `${m.name} (${m.role})${m.name === c.org ? ' *' : ''}`).join(', ') || 'none'}`,
        `from:   ${from}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}

function normalizeUrl(value: string | undefined): string {
  if (!value) throw new CliError('name the control plane to sign in to: `berth login https://berth.example.com` (or set BERTH_URL)', 2);
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `https://${value}`);
  } catch {
    throw new CliError(`'${value}' is not a URL: give the address you open Berth at, such as https://berth.example.com`, 2);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CliError(`'${value}' is not an http(s) URL`, 2);
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** A call that needs no token (sign-in routes), with the same one-line errors as the client's. */
function anonymous<T>(url: string, method: string, path: string, body?: unknown): Promise<T> {
  const c = new ApiClient({ url, token: '' });
  return c.request<T>(method, path, body).catch((err: unknown) => {
    if (err instanceof CliError && /cannot reach/.test(err.message)) throw new CliError(`cannot reach Berth at ${url}: check the address (and that the control plane is running)`);
    throw err;
  });
}

/** A new login replaces the old one; a token the old login made is revoked on the way (best effort). */
async function forgetPrevious(newToken: string): Promise<void> {
  let old;
  try {
    old = readLoginConfig();
  } catch {
    return;
  }
  if (!old?.madeByLogin || old.token === newToken) return;
  await new ApiClient({ url: old.url, token: old.token }).request('DELETE', '/api/me/token').catch(() => {});
}

/** A token from standard input: piped as is, or typed at a hidden prompt on a terminal. */
async function readToken(fromStdin: boolean): Promise<string> {
  const stdin = process.stdin;
  let token: string;
  if (!stdin.isTTY || fromStdin) {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(chunk as Buffer);
    token = Buffer.concat(chunks).toString('utf8').trim();
    if (!token) throw new CliError('no token on standard input: pipe one in (`printf %s "$TOKEN" | berth login URL`), or make one with `berth token create`', 2);
  } else {
    token = (await hiddenPrompt('API token (input hidden): ')).trim();
    if (!token) throw new CliError('no token given: paste one (`berth token create` makes one, Settings → Tokens in the web UI too)', 2);
  }
  return token;
}

/** Reads a line from the terminal without echoing it. */
function hiddenPrompt(question: string): Promise<string> {
  const stdin = process.stdin;
  // No echo before the question shows: a token typed or pasted the moment it appears stays hidden.
  stdin.setRawMode(true);
  process.stderr.write(question);
  stdin.resume();
  stdin.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new CliError('cancelled', 130));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/**
 * The identity provider's sign-in in the browser: a listener on a loopback port receives a
 * one-time code, which only this process can trade for the token (it holds the PKCE
 * verifier). The control plane sends the browser to 127.0.0.1 and nowhere else.
 */
async function browserSignIn(url: string, openIt: boolean): Promise<SignedIn> {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  let settle!: { resolve: (code: string) => void; reject: (err: Error) => void };
  const received = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
  const server = createServer((req, res) => {
    const query = new URL(req.url ?? '/', 'http://127.0.0.1').searchParams;
    if (!req.url?.startsWith('/callback')) {
      res.writeHead(404).end();
      return;
    }
    const code = query.get('code');
    const error = query.get('error');
    res.writeHead(code ? 200 : 400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(
      `<!doctype html><meta charset="utf-8"><title>Berth</title><body style="font-family:system-ui;margin:3em">` +
        (code ? '<h1>Signed in</h1><p>You can close this tab and go back to the terminal.</p>' : '<h1>Sign-in failed</h1><p>Go back to the terminal and run <code>berth login</code> again.</p>'),
    );
    if (code) settle.resolve(code);
    else settle.reject(new CliError(`the sign-in did not finish${error ? `: ${error}` : ''}: run \`berth login\` again`, 4));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const start = `${url}/api/auth/oidc/start?cli_port=${port}&cli_challenge=${challenge}`;
  process.stderr.write(`${openIt ? 'Opening your browser to sign in. If it does not open, visit' : 'To sign in, open'}:\n  ${start}\nWaiting for the browser…\n`);
  if (openIt) openBrowser(start);
  const timer = setTimeout(() => settle.reject(new CliError('no sign-in came back within 10 minutes: run `berth login` again', 4)), BROWSER_WAIT_MS);
  try {
    const code = await received;
    return await anonymous<SignedIn>(url, 'POST', '/api/auth/cli/token', { code, verifier });
  } finally {
    clearTimeout(timer);
    server.close();
    server.closeAllConnections();
  }
}

/** $BROWSER, else xdg-open (or macOS's open) when installed; otherwise the printed address is the way. */
function openBrowser(target: string): void {
  const onPath = (name: string) => (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, name)));
  const command = process.env.BROWSER?.trim() || (onPath('xdg-open') ? 'xdg-open' : onPath('open') && process.platform === 'darwin' ? 'open' : undefined);
  if (!command) return;
  try {
    const child = spawn(command, [target], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
  } catch {
    // The address is printed: the person can open it themselves.
  }
}

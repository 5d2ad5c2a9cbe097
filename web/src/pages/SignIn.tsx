import { useEffect, useState, type FormEvent } from 'react';
import { api, ApiError, setToken, type AuthMethods, type Me } from '../api.ts';
import { navigate } from '../router.tsx';

const OIDC_START = '/api/auth/oidc/start';

/**
 * How this control plane lets people sign in (never probing the start route: that would begin
 * a sign-in). Asked again a few times when the answer does not come (a control plane starting
 * or restarting, a dropped connection): without it the page offers no identity provider at all.
 */
async function signInMethods(attempts = 5): Promise<AuthMethods | undefined> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch('/api/auth/methods', { cache: 'no-store' });
      if (res.ok) return (await res.json()) as AuthMethods;
    } catch {
      // Not reachable just now: try again below.
    }
    if (attempt >= attempts) return undefined;
    await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
  }
}

export function SignIn({ onToken }: { onToken: (token: string) => void }) {
  const [oidc, setOidc] = useState<AuthMethods['oidc']>();
  const [value, setValue] = useState('');
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    document.title = 'Sign in · Berth';
    void signInMethods().then((m) => setOidc(m?.oidc));
  }, []);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) return setError('Paste an API token (berth token create, or Settings → Tokens).');
    setBusy(true);
    setError(undefined);
    setToken(token, remember);
    try {
      await api<Me>('GET', '/api/me');
      onToken(token);
      if (location.pathname === '/' || location.pathname === '/sign-in') navigate('/tasks', true);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? 'That token was not accepted: it is unknown, revoked or expired.' : (err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin" id="main">
      <h1>Sign in to Berth</h1>
      {oidc?.enabled && (
        <p>
          <a className="button primary" href={OIDC_START}>Sign in with {oidc.name ?? 'your identity provider'}</a>
        </p>
      )}
      <form onSubmit={submit}>
        <h2>{oidc?.enabled ? 'Or use an API token' : 'Use an API token'}</h2>
        <label htmlFor="token">API token</label>
        <input id="token" type="password" autoComplete="off" spellCheck={false} value={value} onChange={(e) => setValue(e.target.value)} aria-invalid={error ? true : undefined} aria-describedby={error ? 'token-error token-help' : 'token-help'} />
        <p id="token-help" className="muted">On the machine running <code>berth up</code>, <code>berth login --print-token</code> prints the local administrator's token (<code>berth up</code> also prints a one-time sign-in link); <code>berth token create</code> makes more, and an admin's invite link signs you in without one. It is kept in this tab only unless you tick the box.</p>
        <label className="check">
          <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} /> Keep me signed in on this browser
        </label>
        {error && <p id="token-error" className="error" role="alert">{error}</p>}
        <button className="primary" type="submit" disabled={busy}>{busy ? 'Checking…' : 'Sign in'}</button>
      </form>
    </main>
  );
}

/** The identity provider sends the browser here (BERTH_OIDC_REDIRECT_URI = https://host/auth/oidc/callback). */
export function OidcCallback({ onToken }: { onToken: (token: string) => void }) {
  const [error, setError] = useState<string>();
  useEffect(() => {
    fetch(`/api/auth/oidc/callback${location.search}`, { credentials: 'same-origin' })
      .then(async (res) => {
        const body = (await res.json()) as { token?: string; redirect?: string; error?: { message: string } };
        // Started by `berth login`: the browser goes on to the CLI's listener on this machine.
        if (res.ok && body.redirect?.startsWith('http://127.0.0.1:')) return location.replace(body.redirect);
        if (!res.ok || !body.token) throw new Error(body.error?.message ?? `sign-in failed (${res.status})`);
        // A sign-in session lasts a working day: keep it for this tab only.
        setToken(body.token, false);
        onToken(body.token);
        navigate('/tasks', true);
      })
      .catch((err: Error) => setError(err.message));
    // Once: the state can be used only once.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <main className="signin" id="main">
      <h1>Signing in…</h1>
      {error && (
        <>
          <p className="error" role="alert">{error}</p>
          <p><a href="/">Start again</a></p>
        </>
      )}
    </main>
  );
}

/**
 * An invite link (URL/invite#CODE): the code rides in the fragment, so no server log or
 * Referer sees it. Accepting trades it, once, for the member's own API token, shown here once.
 */
export function InvitePage({ onToken }: { onToken: (token: string) => void }) {
  const [code] = useState(() => decodeURIComponent(location.hash.slice(1)).trim());
  const [accepted, setAccepted] = useState<{ token: string; email: string; orgs: { name: string; role: string }[] }>();
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    document.title = 'Invitation · Berth';
  }, []);

  const accept = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const res = await fetch('/api/auth/invite', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
      const body = (await res.json()) as { token?: string; user?: { email: string }; orgs?: { name: string; role: string }[]; error?: { message: string } };
      if (!res.ok || !body.token) throw new Error(body.error?.message ?? `the invite was not accepted (${res.status})`);
      // Spent: the address bar no longer carries it.
      history.replaceState(null, '', '/invite');
      setAccepted({ token: body.token, email: body.user?.email ?? '', orgs: body.orgs ?? [] });
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const go = () => {
    if (!accepted) return;
    setToken(accepted.token, remember);
    onToken(accepted.token);
    navigate('/tasks', true);
  };

  return (
    <main className="signin" id="main">
      <h1>You are invited to Berth</h1>
      {!code && !accepted && <p className="error" role="alert">This invite link has no code: open the whole link you were sent, or ask an admin for a new one.</p>}
      {code && !accepted && (
        <>
          <p>Accepting signs you in and makes your own API token. The link works once.</p>
          {error && <p className="error" role="alert">{error}</p>}
          <button className="primary" type="button" onClick={accept} disabled={busy}>{busy ? 'Accepting…' : 'Accept invite'}</button>
        </>
      )}
      {accepted && (
        <>
          <p role="status">Welcome, {accepted.email}: you are {accepted.orgs.map((o) => `${o.role} in ${o.name}`).join(', ')}.</p>
          <label htmlFor="invite-token">Your API token, shown only now</label>
          <input id="invite-token" readOnly value={accepted.token} onFocus={(e) => e.currentTarget.select()} />
          <p className="muted">Keep it like a password. Sign in with it here again, or from a terminal: <code>berth login {location.origin}</code> and paste it.</p>
          <label className="check">
            <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} /> Keep me signed in on this browser
          </label>
          <button className="primary" type="button" onClick={go}>Continue to Berth</button>
        </>
      )}
    </main>
  );
}

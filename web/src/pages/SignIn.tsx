import { useEffect, useState, type FormEvent } from 'react';
import { api, ApiError, setToken, type AuthMethods, type Me } from '../api.ts';
import { navigate } from '../router.tsx';

const OIDC_START = '/api/auth/oidc/start';

/** How this control plane lets people sign in (never probing the start route: that would begin a sign-in). */
async function signInMethods(): Promise<AuthMethods | undefined> {
  try {
    const res = await fetch('/api/auth/methods', { cache: 'no-store' });
    return res.ok ? ((await res.json()) as AuthMethods) : undefined;
  } catch {
    return undefined;
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
        <p id="token-help" className="muted"><code>berth up</code> prints one; <code>berth token create</code> makes more. It is kept in this tab only unless you tick the box.</p>
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
        const body = (await res.json()) as { token?: string; error?: { message: string } };
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

import { lazy, Suspense, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { api, ApiError, clearToken, getToken, SIGNED_OUT, can, type Me } from './api.ts';
import { Link, navigate, useLocation } from './router.tsx';
import { getFirst } from './prefetch.ts';
import { SessionContext, type Session } from './session.ts';
import { ThemeSwitch, useTheme } from './theme.tsx';
import { SignIn, OidcCallback, InvitePage } from './pages/SignIn.tsx';
import { TasksPage } from './pages/Tasks.tsx';
import { TaskPage } from './pages/TaskPage.tsx';
import { NewTaskPage } from './pages/NewTask.tsx';

const EnvironmentsPage = lazy(() => import('./pages/Environments.tsx'));
const EnvironmentPage = lazy(() => import('./pages/EnvironmentPage.tsx'));
const SnapshotsPage = lazy(() => import('./pages/Snapshots.tsx'));
const CampaignsPage = lazy(() => import('./pages/Campaigns.tsx'));
const CampaignPage = lazy(() => import('./pages/CampaignPage.tsx'));
const AuditPage = lazy(() => import('./pages/Audit.tsx'));
const SettingsPage = lazy(() => import('./pages/Settings.tsx'));

const ORG_KEY = 'berth.org';

export function App() {
  const { path } = useLocation();
  const [token, setTokenState] = useState(getToken);
  const [me, setMe] = useState<Me>();
  const [error, setError] = useState<string>();
  const [orgName, setOrgName] = useState(() => new URLSearchParams(location.search).get('org') ?? localStorage.getItem(ORG_KEY) ?? '');
  const [message, setMessage] = useState('');
  const [theme, setTheme] = useTheme();

  useEffect(() => {
    const out = () => {
      setTokenState(null);
      setMe(undefined);
    };
    window.addEventListener(SIGNED_OUT, out);
    return () => window.removeEventListener(SIGNED_OUT, out);
  }, []);

  useEffect(() => {
    if (!token) return;
    setError(undefined);
    getFirst<Me>('/api/me')
      .then(setMe)
      .catch((err: ApiError) => setError(err.message));
  }, [token]);

  const org = useMemo(() => me?.orgs.find((o) => o.name === orgName) ?? me?.orgs.find((o) => o.name === 'default') ?? me?.orgs[0], [me, orgName]);

  const signOut = useCallback(() => {
    clearToken();
    setTokenState(null);
    setMe(undefined);
    navigate('/', true);
  }, []);

  const session: Session | undefined = useMemo(
    () =>
      me && org
        ? {
            me,
            org,
            setOrg: (name: string) => {
              localStorage.setItem(ORG_KEY, name);
              setOrgName(name);
              navigate('/tasks');
            },
            signOut,
            announce: (m: string) => {
              setMessage(m);
              setTimeout(() => setMessage((cur) => (cur === m ? '' : cur)), 6000);
            },
          }
        : undefined,
    [me, org, signOut],
  );

  // A new page moves focus to its content, so a screen reader starts reading there; so does
  // signing in, once the pages are there (the sign-in form that had the focus is gone).
  // Only a page loaded afresh starts at the top, with the skip link.
  const firstPage = useRef(true);
  const ready = session !== undefined;
  useEffect(() => {
    document.title = titleFor(path);
    if (!ready) return;
    if (firstPage.current) firstPage.current = false;
    else document.getElementById('main')?.focus({ preventScroll: true });
  }, [path, ready]);
  const signedIn = (t: string) => {
    firstPage.current = false;
    setTokenState(t);
  };

  if (path === '/auth/oidc/callback') return <OidcCallback onToken={signedIn} />;
  if (path === '/invite') return <InvitePage onToken={signedIn} />;
  if (!token) return <SignIn onToken={signedIn} />;
  if (error) {
    return (
      <main className="center" id="main">
        <h1>Berth</h1>
        <p role="alert">{error}</p>
        <button onClick={signOut}>Sign in again</button>
      </main>
    );
  }
  if (!me) return <main className="center" id="main" aria-busy="true"><p>Loading…</p></main>;
  if (!session) {
    return (
      <main className="center" id="main">
        <h1>No org</h1>
        <p>This token belongs to no org yet. Ask an admin to add you, or sign in with another token.</p>
        <button onClick={signOut}>Sign out</button>
      </main>
    );
  }

  const role = session.org.role;
  const nav = [
    { to: '/tasks', label: 'Tasks' },
    { to: '/environments', label: 'Environments' },
    { to: '/snapshots', label: 'Snapshots' },
    { to: '/campaigns', label: 'Campaigns' },
    ...(can.readAudit(role) ? [{ to: '/audit', label: 'Audit log' }] : []),
    { to: '/settings', label: 'Settings' },
  ];
  return (
    <SessionContext.Provider value={session}>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <Link to="/tasks" className="brand">Berth</Link>
        <nav aria-label="Main">
          <ul>
            {nav.map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={path === n.to || (path.startsWith(n.to + '/') && n.to !== '/') ? 'page' : undefined}>{n.label}</Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <label htmlFor="org-switcher" className="sr-only">Org</label>
          <select id="org-switcher" value={session.org.name} onChange={(e) => session.setOrg(e.target.value)}>
            {me.orgs.map((o) => (
              <option key={o.id} value={o.name}>{o.name} ({o.role})</option>
            ))}
          </select>
          <ThemeSwitch choice={theme} set={setTheme} />
          <span className="muted" title={me.kind === 'org' ? 'an org token' : 'a user token'}>{me.email ?? (me.kind === 'org' ? 'org token' : 'user')}</span>
          <button className="link" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <div className="announce" role="status" aria-live="polite">{message}</div>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p aria-busy="true">Loading…</p>}>
          <Route path={path} />
        </Suspense>
      </main>
    </SessionContext.Provider>
  );
}

function Route({ path }: { path: string }) {
  if (path === '/' || path === '/sign-in') {
    navigate('/tasks', true);
    return null;
  }
  if (path === '/tasks') return <TasksPage />;
  if (path === '/tasks/new') return <NewTaskPage />;
  const task = /^\/tasks\/(task_[0-9a-z]+)$/.exec(path);
  if (task) return <TaskPage id={task[1]!} key={task[1]} />;
  if (path === '/environments') return <EnvironmentsPage />;
  const env = /^\/environments\/([A-Za-z0-9_-]{1,100})$/.exec(path);
  if (env) return <EnvironmentPage id={env[1]!} key={env[1]} />;
  if (path === '/snapshots') return <SnapshotsPage />;
  if (path === '/campaigns') return <CampaignsPage />;
  const campaign = /^\/campaigns\/([A-Za-z0-9._-]{1,100})$/.exec(path);
  if (campaign) return <CampaignPage id={campaign[1]!} key={campaign[1]} />;
  if (path === '/audit') return <AuditPage />;
  if (path === '/settings') return <SettingsPage />;
  return (
    <>
      <h1>Not found</h1>
      <p>There is no page at {path}. <Link to="/tasks">Go to the tasks</Link>.</p>
    </>
  );
}

function titleFor(path: string): string {
  const page = path === '/invite' ? 'Invitation' : path.startsWith('/tasks/task_') ? 'Task' : path === '/tasks/new' ? 'New task' : path.startsWith('/environments/') ? 'Environment' : path.startsWith('/environments') ? 'Environments' : path === '/snapshots' ? 'Snapshots' : path === '/campaigns' ? 'Campaigns' : path.startsWith('/campaigns/') ? 'Campaign' : path.startsWith('/audit') ? 'Audit log' : path.startsWith('/settings') ? 'Settings' : 'Tasks';
  return `${page} · Berth`;
}

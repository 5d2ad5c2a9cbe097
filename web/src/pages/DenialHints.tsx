import { useState } from 'react';
import { api, can, orgPath, type TaskEvent } from '../api.ts';
import { useSession } from '../session.ts';
import type { DenialFix } from '../../../src/shared/tasks.ts';
import { ErrorNote } from './common.tsx';

type Hint = { seq: number; host: string; port: number; message: string; fix: DenialFix };
type PolicyFix = Extract<DenialFix, { kind: 'policy' }>;
interface Effective {
  effective: { allowDomains: string[]; presets: string[]; allowPorts: number[] | null; allowMethods: string[] | null };
}

/** The hint's words, its `commands` as code. */
function Words({ text }: { text: string }) {
  return <>{text.split('`').map((part, i) => (i % 2 ? <code key={i}>{part}</code> : part))}</>;
}

/**
 * Above the transcript: each destination the environment kept asking for and was refused,
 * with what would allow it. An admin allows it here with one click (the policy API, the same
 * change the command makes); others see the command to ask an admin for.
 */
export function DenialHints({ events }: { events: TaskEvent[] }) {
  const hints = events.filter((e) => e.data.type === 'denials').map((e) => ({ seq: e.seq, ...(e.data as Omit<Hint, 'seq'>) }));
  if (!hints.length) return null;
  return (
    <section className="denial-hints stack" aria-label="Refused network requests">
      {hints.map((h) => <DenialHint key={h.seq} hint={h} />)}
    </section>
  );
}

function DenialHint({ hint }: { hint: Hint }) {
  const { org } = useSession();
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState(false);
  const [error, setError] = useState<Error>();
  const fix = hint.fix;
  const mayAllow = can.managePolicy(org.role);

  const allow = async (f: PolicyFix) => {
    setBusy(true);
    setError(undefined);
    try {
      // The list as it stands now, plus this: the policy API replaces the field's whole list.
      const query = f.project ? `?project=${encodeURIComponent(f.project)}` : '';
      const { effective } = await api<Effective>('GET', orgPath(org.name, `policies/effective${query}`));
      const current: (string | number)[] = f.field === 'allowPorts' ? (effective.allowPorts ?? [80, 443]) : f.field === 'allowMethods' ? (effective.allowMethods ?? []) : effective[f.field];
      if (!current.includes(f.add)) {
        const path = f.project ? `policies/projects/${encodeURIComponent(f.project)}` : 'policies/org';
        await api('PATCH', orgPath(org.name, path), { [f.field]: [...current, f.add] });
      }
      setDone(true);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="notice denial-hint" role="note" aria-label={`Refused: ${hint.host}:${hint.port}`}>
      <p><strong><Words text={hint.message} /></strong></p>
      {fix.kind === 'policy' && mayAllow && !done && (
        <button className="primary" disabled={busy} aria-busy={busy} onClick={() => void allow(fix)}>{fix.label}</button>
      )}
      {fix.kind === 'policy' && done && (
        <p role="status">Done: {fix.project ? `project ${fix.project}` : 'the org'} now allows it. Retry the task to use it.</p>
      )}
      {fix.kind === 'policy' && !mayAllow && (
        <p>Only an admin of {org.name} can allow it: ask one to run <code>{fix.command}</code></p>
      )}
      {fix.kind === 'trusted-network' && (
        <p>Only the administrator of this Berth can trust a network: ask them to start it with <code>{fix.command}</code></p>
      )}
      <ErrorNote error={error} />
    </div>
  );
}

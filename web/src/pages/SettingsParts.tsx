// Pieces the Settings › Triggers parts share: a sub-part with its heading, a copy button,
// and the row a link from elsewhere points at.
import { useEffect, useState, type ReactNode } from 'react';

/** Copies a URL, and says it did (or why not) to screen readers too. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [said, setSaid] = useState('');
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setSaid('Copied');
    } catch {
      setSaid('Copy it by hand: the browser refused the clipboard');
    }
  };
  return (
    <>
      <button type="button" aria-label={label} onClick={() => void copy()}>Copy</button>
      <span className="muted" role="status">{said && ` ${said}`}</span>
    </>
  );
}

/**
 * Scrolls to and marks the row the address names (`/settings#schedule-sch_…`, linked from a
 * task's page) once it is on screen.
 */
export function useAnchoredRow(loaded: boolean): string {
  const target = decodeURIComponent(location.hash.slice(1));
  useEffect(() => {
    if (loaded && target) document.getElementById(target)?.scrollIntoView({ block: 'center' });
  }, [loaded, target]);
  return target;
}

/**
 * A sub-part of Triggers: a heading and what it shows. A plain block under its heading, not a
 * labelled <section>: Firefox ESR 153's content process crashed (SIGSEGV) on a labelled section
 * inside the labelled Settings section once its table had rows, with accessibility on.
 */
export function Part({ id, title, children }: { id: string; title: string; children: ReactNode }) {
  return (
    <div className="part" id={id}>
      <h3 id={`${id}-h`}>{title}</h3>
      {children}
    </div>
  );
}

/** Runs a change, then reloads the list; keeps the error to show. */
export function useAction(reload: () => void) {
  const [error, setError] = useState<Error>();
  const run = async (f: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await f();
      reload();
      return true;
    } catch (err) {
      setError(err as Error);
      return false;
    }
  };
  return { error, run };
}

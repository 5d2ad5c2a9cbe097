import { cloneElement, type ReactElement, type ReactNode } from 'react';
import type { Task } from '../api.ts';
import { isOutside, originWords } from './Trigger.tsx';

const STATE_LABEL: Record<string, string> = { timed_out: 'timed out' };

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge state-${state}`}>{STATE_LABEL[state] ?? state}</span>;
}

export function ErrorNote({ error }: { error: Error | string | undefined }) {
  if (!error) return null;
  return <p className="error" role="alert">{typeof error === 'string' ? error : error.message}</p>;
}

/** A labelled control with an optional hint, which screen readers read as the control's description. */
export function Field({ id, label, hint, children }: { id: string; label: string; hint?: ReactNode; children: ReactElement<{ 'aria-describedby'?: string }> }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {hint ? cloneElement(children, { 'aria-describedby': `${id}-hint` }) : children}
      {hint && <p className="hint" id={`${id}-hint`}>{hint}</p>}
    </div>
  );
}

/** A column of a ListTable: its heading, or with `num` right-aligned figures, or with `hidden` a heading only screen readers read (an actions column). */
export type Column = string | { label: string; num?: true; hidden?: true };

/**
 * A list as a table: it scrolls sideways on a narrow screen, its caption is read by screen
 * readers only, and its columns are headed in one row. The rows are the caller's.
 */
export function ListTable({ className, caption, columns, children }: { className: string; caption: string; columns: Column[]; children: ReactNode }) {
  return (
    <div className="scroll-x">
      <table className={`list ${className}`}>
        <caption className="sr-only">{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => {
              const { label, num, hidden } = typeof c === 'string' ? ({ label: c } as Exclude<Column, string>) : c;
              return <th key={label} scope="col" className={num ? 'num' : undefined}>{hidden ? <span className="sr-only">{label}</span> : label}</th>;
            })}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

/** Who started a task: the person's name (or email), else what the id says (a token, a task, GitHub: octocat). */
/** The forges Berth speaks, as a select's options; `from` names the empty choice (the kind read from the URL). */
export function ForgeKindOptions({ from }: { from: string }) {
  return (
    <>
      <option value="">{from}</option>
      <option value="github">GitHub</option>
      <option value="gitlab">GitLab</option>
      <option value="git">plain git</option>
    </>
  );
}

export function By({ task }: { task: Pick<Task, 'createdBy' | 'creator'> }) {
  const who = task.creator;
  if (who) return <span title={who.email}>{who.name || who.email}</span>;
  const [kind, id] = task.createdBy.split(':', 2);
  const label = kind === 'token' ? 'an org token' : kind === 'task' ? `task ${id}` : isOutside(task.createdBy) ? originWords(task.createdBy) : task.createdBy;
  return <span className="muted" title={task.createdBy}>{label}</span>;
}

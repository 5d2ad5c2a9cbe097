import { useVirtualizer } from '@tanstack/react-virtual';
import { memo, useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import type { TaskEvent } from '../api.ts';
import { ms, usd } from '../util.ts';

type Data = Record<string, unknown> & { type: string };

/**
 * Every collapsed row has one height, so rows on screen are never measured: one line of 31
 * px, or on a narrow screen (a phone, 390 px) two lines of 52 px, the text under the time
 * and kind, across the whole width (styles.css says the same width).
 */
const ROW = 31;
const NARROW_ROW = 52;
const NARROW = '(max-width: 40rem)';

function useRowHeight(): number {
  const [narrow, setNarrow] = useState(() => matchMedia(NARROW).matches);
  useEffect(() => {
    const m = matchMedia(NARROW);
    const change = () => setNarrow(m.matches);
    m.addEventListener('change', change);
    return () => m.removeEventListener('change', change);
  }, []);
  return narrow ? NARROW_ROW : ROW;
}

/**
 * The live transcript. Only the rows on screen are in the DOM (thousands of events stay
 * cheap), and a collapsed row has a fixed height: a burst of events costs one layout, not
 * one measurement per row. Only expanded rows are measured. It follows the end while you
 * are at the end, and stays put when you scroll up.
 */
export const Transcript = memo(function Transcript({ events, earlier = 0, loadEarlier }: { events: TaskEvent[]; earlier?: number; loadEarlier?: (() => Promise<void>) | undefined }) {
  const scroller = useRef<HTMLDivElement>(null);
  const earlierButton = useRef<HTMLButtonElement>(null);
  const firstSeq = useRef<number | undefined>(undefined);
  const [open, setOpen] = useState<ReadonlySet<number>>(() => new Set());
  const atEnd = useRef(true);
  const row = useRowHeight();

  const v = useVirtualizer({
    count: events.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => row,
    overscan: 10,
    getItemKey: (i) => events[i]!.seq,
  });
  const toggle = useCallback((seq: number, index: number) => {
    setOpen((cur) => {
      const next = new Set(cur);
      if (next.has(seq)) {
        next.delete(seq);
        v.resizeItem(index, row);
      } else next.add(seq);
      return next;
    });
  }, [v, row]);
  // A turn of the phone changes every row's height.
  useEffect(() => v.measure(), [v, row]);

  // Before paint: new rows at the end keep the view at the end, without a visible jump;
  // earlier rows put in front (collapsed, so `row` high each) keep the rows you were reading in place.
  useLayoutEffect(() => {
    const el = scroller.current;
    const prev = firstSeq.current;
    firstSeq.current = events[0]?.seq;
    if (!el) return;
    if (atEnd.current) el.scrollTop = el.scrollHeight;
    else if (prev !== undefined && events.length && events[0]!.seq < prev) el.scrollTop += events.findIndex((e) => e.seq === prev) * row;
  }, [events]); // eslint-disable-line react-hooks/exhaustive-deps

  // The control goes once everything is loaded: focus moves to the transcript rather than being lost.
  const refocus = useRef(false);
  const showEarlier = () => {
    if (!loadEarlier) return;
    refocus.current = document.activeElement === earlierButton.current;
    void loadEarlier();
  };
  useEffect(() => {
    if (earlier > 0 || !refocus.current) return;
    refocus.current = false;
    scroller.current?.focus();
  }, [earlier]);

  const onScroll = () => {
    const el = scroller.current!;
    atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  };

  if (events.length === 0) return <p className="empty">No events yet: the task is waiting for a runner.</p>;
  return (
    <>
    {earlier > 0 && (
      <div className="earlier">
        {/* aria-disabled, not disabled: a disabled button drops the keyboard focus while the page loads. */}
        <button ref={earlierButton} className="link small" aria-disabled={!loadEarlier} aria-busy={!loadEarlier} onClick={showEarlier}>
          {loadEarlier ? 'Show earlier events' : 'Loading earlier events…'}
        </button>
        <span className="muted"> ({earlier.toLocaleString()} not loaded yet)</span>
      </div>
    )}
    <div className="transcript" ref={scroller} onScroll={onScroll} tabIndex={0} role="log" aria-label="Transcript" aria-live="off">
      <ol style={{ height: v.getTotalSize(), position: 'relative' }}>
        {v.getVirtualItems().map((item) => {
          const e = events[item.index]!;
          return (
            <li key={item.key} data-index={item.index} ref={open.has(e.seq) ? v.measureElement : undefined} className="ev-row" style={{ transform: `translateY(${item.start}px)` }}>
              <Event e={e} index={item.index} open={open.has(e.seq)} toggle={toggle} />
            </li>
          );
        })}
      </ol>
    </div>
    </>
  );
});

const time = (iso: string) => iso.slice(11, 19);

const Event = memo(function Event({ e, index, open, toggle }: { e: TaskEvent; index: number; open: boolean; toggle: (seq: number, index: number) => void }) {
  const d = e.data as Data;
  const body = render(d);
  return (
    <div className={`ev ev-${d.type} ${body.tone ? `tone-${body.tone}` : ''} ${open ? 'open' : ''}`}>
      <span className="ev-time"><time dateTime={e.at}>{time(e.at)}</time></span>
      <span className="ev-kind">{body.kind}</span>
      <div className="ev-title">{body.title}</div>
      {body.detail !== undefined ? (
        <button className="link small ev-toggle" aria-expanded={open} onClick={() => toggle(e.seq, index)}>
          {open ? 'Hide' : 'Show'} {body.detailLabel ?? 'details'}
        </button>
      ) : <span />}
      {open && <pre className="ev-detail">{body.detail}</pre>}
    </div>
  );
});

interface Rendered {
  kind: string;
  title: React.ReactNode;
  detail?: string;
  detailLabel?: string;
  tone?: 'bad' | 'ok' | 'warn' | 'deny';
}

const str = (v: unknown) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));
const lines = (s: string) => {
  const n = s ? s.split('\n').length : 0;
  return `output (${n} line${n === 1 ? '' : 's'})`;
};
const Exit = ({ code, timedOut }: { code: unknown; timedOut?: unknown }) =>
  code === null || code === undefined ? null : <span className={`exit ${code === 0 ? 'ok' : 'bad'}`}>{timedOut ? 'timed out' : `exit ${String(code)}`}</span>;

function argsSummary(tool: string, args: unknown): string {
  const a = (args ?? {}) as Record<string, unknown>;
  if (typeof a.command === 'string') return a.command;
  if (typeof a.path === 'string') return a.path;
  if (typeof a.pattern === 'string') return a.pattern;
  if (tool === 'finish' && typeof a.summary === 'string') return a.summary;
  const s = JSON.stringify(args);
  return s && s.length > 160 ? `${s.slice(0, 160)}…` : (s ?? '');
}

function render(d: Data): Rendered {
  switch (d.type) {
    case 'state':
      return { kind: 'state', title: <>→ <strong>{str(d.state).replace('_', ' ')}</strong>{d.reason ? <span className="muted"> {str(d.reason)}</span> : null}</>, tone: d.state === 'failed' || d.state === 'timed_out' ? 'bad' : d.state === 'succeeded' ? 'ok' : undefined };
    case 'step':
      return { kind: 'step', title: <><strong>{str(d.step)}</strong> <span className="muted">{str(d.message)}</span></> };
    case 'log':
      return { kind: str(d.level) || 'log', title: str(d.message), tone: d.level === 'error' ? 'bad' : d.level === 'warn' ? 'warn' : undefined };
    case 'model': {
      const usage = (d.usage ?? {}) as { inputTokens?: number; outputTokens?: number; costUsd?: number };
      const calls = (d.toolCalls as { name: string }[] | undefined) ?? [];
      const text = typeof d.text === 'string' ? d.text : '';
      return {
        kind: 'model',
        title: (
          <>
            {text ? <span className="model-text">{text.split('\n')[0]}</span> : <span className="muted">{str(d.model)}</span>}
            {calls.length > 0 && <span className="muted"> → {calls.map((c) => c.name).join(', ')}</span>}
            <span className="meta"> {usage.inputTokens ?? 0}/{usage.outputTokens ?? 0} tok · {usd(usage.costUsd ?? 0)} · {ms(Number(d.durationMs ?? 0))}{d.via === 'gateway' ? ' · gateway' : ''}</span>
          </>
        ),
        ...(text.length > 120 || text.includes('\n') ? { detail: text, detailLabel: 'message' } : {}),
      };
    }
    case 'tool': {
      const output = str(d.output);
      return {
        kind: 'tool',
        title: (
          <>
            <strong>{str(d.tool)}</strong> <code>{argsSummary(str(d.tool), d.args)}</code> <Exit code={d.exitCode} />
            {d.error === true && d.exitCode === null ? <span className="exit bad">error</span> : null}
            <span className="meta"> {ms(Number(d.durationMs ?? 0))}</span>
          </>
        ),
        detail: output,
        detailLabel: lines(output),
        tone: d.error ? 'bad' : undefined,
      };
    }
    case 'command': {
      const output = str(d.output);
      return {
        kind: str(d.phase) || 'command',
        title: (
          <>
            <code>$ {str(d.cmd)}</code> <Exit code={d.exitCode} timedOut={d.timedOut} />
            <span className="meta"> {ms(Number(d.durationMs ?? 0))}</span>
          </>
        ),
        detail: output,
        detailLabel: lines(output),
        tone: d.exitCode !== 0 ? 'bad' : undefined,
      };
    }
    case 'check':
      return { kind: 'check', title: <>attempt {str(d.attempt)}: <strong className={d.passed ? 'ok' : 'bad'}>{d.passed ? 'passed' : 'failed'}</strong> <span className="muted">{str(d.summary)}</span></>, tone: d.passed ? 'ok' : 'bad' };
    case 'result':
      return { kind: 'result', title: str(d.summary), tone: 'ok' };
    case 'network': {
      // The egress proxy's record of one request; a denial is what someone needs to see.
      const denied = d.allowed === false || d.decision === 'deny' || d.decision === 'denied' || d.denied === true || d.action === 'deny';
      const where = str(d.host ?? d.url ?? d.destination ?? d.target);
      return {
        kind: denied ? 'denied' : 'network',
        title: (
          <>
            {denied ? <strong>Network request denied: </strong> : null}
            {d.method ? `${str(d.method)} ` : ''}<code>{where}{d.port ? `:${str(d.port)}` : ''}{typeof d.path === 'string' ? d.path : ''}</code>
            {d.reason || d.rule ? <span className="muted"> {str(d.reason ?? d.rule)}</span> : null}
          </>
        ),
        detail: JSON.stringify(d, null, 2),
        tone: denied ? 'deny' : undefined,
      };
    }
    case 'denials':
      // Said once per destination, with the fix: the page shows it above the transcript too.
      return { kind: 'refused', title: <strong>{str(d.message)}</strong>, detail: JSON.stringify(d, null, 2), tone: 'deny' };
    default:
      // A type this UI does not know yet: shown plainly rather than dropped.
      return { kind: d.type || 'event', title: <span className="muted">{summarize(d)}</span>, detail: JSON.stringify(d, null, 2) };
  }
}

function summarize(d: Data): string {
  for (const k of ['message', 'summary', 'text', 'reason']) if (typeof d[k] === 'string') return d[k] as string;
  const s = JSON.stringify(d);
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

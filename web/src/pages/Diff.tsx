import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import java from 'highlight.js/lib/languages/java';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import markdown from 'highlight.js/lib/languages/markdown';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';
import { memo, useMemo, useState } from 'react';
import { api, orgPath } from '../api.ts';
import { usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { parseDiff, sideBySide, type DiffFile, type DiffLine } from './diff-parse.ts';

// A dozen common languages: the highlighter loads with the diff view only, never on first paint.
for (const [name, lang] of Object.entries({ bash, css, go, java, javascript, json, markdown, python, rust, typescript, xml, yaml })) hljs.registerLanguage(name, lang);
const BY_EXT: Record<string, string> = {
  js: 'javascript', mjs: 'javascript', cjs: 'javascript', jsx: 'javascript', ts: 'typescript', tsx: 'typescript', mts: 'typescript',
  py: 'python', go: 'go', rs: 'rust', java: 'java', kt: 'java', json: 'json', yml: 'yaml', yaml: 'yaml', md: 'markdown',
  sh: 'bash', bash: 'bash', css: 'css', scss: 'css', html: 'xml', xml: 'xml', svg: 'xml', vue: 'xml',
};
const languageOf = (path: string) => BY_EXT[path.split('.').pop()?.toLowerCase() ?? ''];

/** Highlights line by line: exact for most code, and a long file costs nothing until it is shown. */
function highlight(text: string, lang: string | undefined): string {
  if (!lang || text.length > 2000) return escape(text);
  try {
    return hljs.highlight(text, { language: lang, ignoreIllegals: true }).value;
  } catch {
    return escape(text);
  }
}
const escape = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

type Mode = 'unified' | 'split';

export default function Diff({ org, id, state }: { org: string; id: string; state: string }) {
  const final = ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(state);
  const diff = usePoll((signal) => api<{ diff: string | null }>('GET', orgPath(org, `tasks/${id}/diff`), undefined, signal), final ? null : 5000, [org, id, final]);
  const files = useMemo(() => (diff.data?.diff ? parseDiff(diff.data.diff) : []), [diff.data]);
  const [mode, setMode] = useState<Mode>(() => (window.innerWidth > 1100 ? 'split' : 'unified'));
  if (diff.error) return <ErrorNote error={diff.error} />;
  if (!diff.data) return <p aria-busy="true">Loading the diff…</p>;
  if (!files.length) return <p className="empty">{final ? 'The task changed no files.' : 'No change yet.'}</p>;
  const adds = files.reduce((n, f) => n + f.additions, 0);
  const dels = files.reduce((n, f) => n + f.deletions, 0);
  return (
    <div className="diff">
      <div className="diff-head">
        <p>
          {files.length} file{files.length > 1 ? 's' : ''} changed, <span className="ok">+{adds}</span> <span className="bad">−{dels}</span>
        </p>
        <ModeSwitch mode={mode} setMode={setMode} label="All files" />
      </div>
      <nav aria-label="Changed files">
        <ul className="diff-files">
          {files.map((f, i) => <li key={i}><a href={`#file-${i}`}>{f.newPath}</a> <span className="ok">+{f.additions}</span> <span className="bad">−{f.deletions}</span></li>)}
        </ul>
      </nav>
      {files.map((f, i) => <FileDiff key={`${i}-${mode}`} file={f} index={i} initial={mode} />)}
    </div>
  );
}

function ModeSwitch({ mode, setMode, label }: { mode: Mode; setMode: (m: Mode) => void; label: string }) {
  return (
    <div className="seg" role="group" aria-label={`${label}: view`}>
      <button aria-pressed={mode === 'unified'} onClick={() => setMode('unified')}>Unified</button>
      <button aria-pressed={mode === 'split'} onClick={() => setMode('split')}>Side by side</button>
    </div>
  );
}

const FileDiff = memo(function FileDiff({ file, index, initial }: { file: DiffFile; index: number; initial: Mode }) {
  const [mode, setMode] = useState(initial);
  const [shown, setShown] = useState(true);
  const lang = languageOf(file.newPath);
  const title = file.status === 'renamed' ? `${file.oldPath} → ${file.newPath}` : file.newPath;
  return (
    <section className="diff-file" id={`file-${index}`} aria-label={`Changes to ${title}`}>
      <header>
        {/* The disclosure pattern: the heading's own text is the button that shows or hides the file. */}
        <h3>
          <button className="disclosure" aria-expanded={shown} onClick={() => setShown(!shown)}><span aria-hidden="true">{shown ? '▾' : '▸'}</span> {title}</button>
        </h3>
        <span className={`badge file-${file.status}`}>{file.status}</span>
        <span className="ok">+{file.additions}</span> <span className="bad">−{file.deletions}</span>
        <ModeSwitch mode={mode} setMode={setMode} label={file.newPath} />
      </header>
      {shown &&
        (file.binary ? (
          <p className="muted">Binary file</p>
        ) : (
          <div className="diff-scroll">
            <table className={`code ${mode}`}>
              {file.hunks.map((h, hi) => (
                <tbody key={hi}>
                  <tr className="hunk"><td colSpan={mode === 'split' ? 4 : 3}>{h.header}</td></tr>
                  {mode === 'unified'
                    ? h.lines.map((l, li) => (
                        <tr key={li} className={l.kind}>
                          <td className="no">{l.oldNo ?? ''}</td>
                          <td className="no">{l.newNo ?? ''}</td>
                          <Code line={l} lang={lang} />
                        </tr>
                      ))
                    : sideBySide(h.lines).map((r, ri) => (
                        <tr key={ri}>
                          <td className={`no ${r.left?.kind ?? 'empty'}`}>{r.left?.oldNo ?? ''}</td>
                          {r.left ? <Code line={r.left} lang={lang} /> : <td className="empty" />}
                          <td className={`no ${r.right?.kind ?? 'empty'}`}>{r.right?.newNo ?? ''}</td>
                          {r.right ? <Code line={r.right} lang={lang} /> : <td className="empty" />}
                        </tr>
                      ))}
                </tbody>
              ))}
            </table>
          </div>
        ))}
    </section>
  );
});

function Code({ line, lang }: { line: DiffLine; lang: string | undefined }) {
  const sign = line.kind === 'add' ? '+' : line.kind === 'del' ? '-' : ' ';
  const said = line.kind === 'add' ? 'added: ' : line.kind === 'del' ? 'removed: ' : '';
  return (
    <td className={`src ${line.kind}`}>
      <span className="sign" aria-hidden="true">{sign}</span>
      {said && <span className="sr-only sign">{said}</span>}
      <span dangerouslySetInnerHTML={{ __html: line.kind === 'note' ? escape(line.text) : highlight(line.text, lang) }} />
    </td>
  );
}

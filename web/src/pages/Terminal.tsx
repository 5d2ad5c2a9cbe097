import { FitAddon } from '@xterm/addon-fit';
import { Terminal as XTerm } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'react';
import { getToken, orgPath } from '../api.ts';

const STDIN = 0;
const STDERR = 2;
// Bash when the image has it, sh otherwise; a login shell so the environment's profile applies.
const SHELL = ['sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi'];

/**
 * A terminal in a running environment: xterm.js over the attach WebSocket. The token rides
 * in the subprotocol list (browsers cannot set Authorization on a WebSocket); the server
 * answers with the plain `berth` protocol, never echoing the token.
 */
export default function Terminal({ org, env, onClose }: { org: string; env: { id: string; name: string }; onClose: () => void }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<XTerm>(undefined);
  const [status, setStatus] = useState('connecting…');

  useEffect(() => {
    const t = new XTerm({ cursorBlink: true, fontSize: 13, fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', scrollback: 5000, screenReaderMode: false, theme: { background: '#101418' } });
    term.current = t;
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(host.current!);
    fit.fit();
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${orgPath(org, `environments/${encodeURIComponent(env.id)}/attach`)}`;
    const ws = new WebSocket(url, ['berth', `berth.bearer.${getToken() ?? ''}`]);
    ws.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    const sendInput = (data: string) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const bytes = encoder.encode(data);
      const frame = new Uint8Array(bytes.length + 1);
      frame[0] = STDIN;
      frame.set(bytes, 1);
      ws.send(frame);
    };
    ws.onopen = () => {
      setStatus('connected');
      ws.send(JSON.stringify({ type: 'start', cmd: SHELL, tty: true, stdin: true, cols: t.cols, rows: t.rows, timeout: 'off', env: { TERM: 'xterm-256color' } }));
      t.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        const msg = JSON.parse(m.data) as { type: string; exitCode?: number; message?: string | null; environment?: string; error?: { message: string } };
        if (msg.type === 'started') {
          t.write(`\x1b[2m[environment ${msg.environment ?? ''} was stopped; starting it]\x1b[0m\r\n`);
        } else if (msg.type === 'exit') {
          // "killed: out of memory (limit 256m)" when the OOM killer ended it.
          t.write(`\r\n\x1b[2m[${msg.message ? `${msg.message}: ` : ''}exited with code ${msg.exitCode}]\x1b[0m\r\n`);
          setStatus(`exited (${msg.exitCode})`);
        } else if (msg.type === 'error') {
          t.write(`\r\n\x1b[31m${msg.error?.message ?? 'error'}\x1b[0m\r\n`);
          setStatus('error');
        }
        return;
      }
      const buf = new Uint8Array(m.data as ArrayBuffer);
      void STDERR;
      t.write(buf.subarray(1));
    };
    ws.onclose = (e) => setStatus((s) => (s === 'connected' || s === 'connecting…' ? (e.code === 1000 ? 'closed' : `disconnected (${e.code})`) : s));
    ws.onerror = () => setStatus('could not connect');
    const onData = t.onData(sendInput);
    const onResize = t.onResize(({ cols, rows }) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
    // Ctrl+Shift+C / Ctrl+Shift+V copy and paste, as in desktop terminals; Ctrl+C stays an interrupt.
    t.attachCustomKeyEventHandler((e) => {
      if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
      if (e.code === 'KeyC') {
        void navigator.clipboard?.writeText(t.getSelection());
        return false;
      }
      if (e.code === 'KeyV') {
        void navigator.clipboard?.readText().then((text) => t.paste(text));
        return false;
      }
      return true;
    });
    const observer = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        // not laid out yet
      }
    });
    observer.observe(host.current!);
    return () => {
      observer.disconnect();
      onData.dispose();
      onResize.dispose();
      ws.close();
      t.dispose();
    };
  }, [org, env.id]);

  // The clipboard API needs the user's permission; say so rather than fail silently.
  const clip = async (f: () => Promise<unknown>) => {
    try {
      await f();
      term.current?.focus();
    } catch (err) {
      setStatus(`clipboard: ${(err as Error).message}`);
    }
  };
  return (
    <section className="terminal-panel" aria-label={`Terminal in ${env.name}`}>
      <header>
        <h2>Terminal: {env.name}</h2>
        <span className="muted" role="status">{status}</span>
        <button onClick={() => void clip(() => navigator.clipboard.writeText(term.current?.getSelection() ?? ''))}>Copy selection</button>
        <button onClick={() => void clip(async () => term.current?.paste(await navigator.clipboard.readText()))}>Paste</button>
        <button onClick={onClose}>Close terminal</button>
      </header>
      <div className="terminal" ref={host} data-testid="terminal" />
      <p className="hint">Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes. The shell ends when you close the terminal.</p>
    </section>
  );
}

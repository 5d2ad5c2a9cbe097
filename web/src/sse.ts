// Server-sent events over fetch: EventSource cannot send an Authorization header. Each
// event carries `id: seq`; after a dropped connection the stream resumes with
// Last-Event-ID, and anything at or below the last seq seen is dropped, so nothing is
// lost or shown twice.
import { createParser } from 'eventsource-parser';
import { getToken } from './api.ts';

const SLICE = 32 * 1024;
const BUDGET_MS = 8;
const nextFrame = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'ended';

export interface FollowOptions {
  /** The last seq already shown: the stream starts after it. */
  after: number;
  onEvents: (events: { seq: number; data: string }[]) => void;
  onStatus?: (s: StreamStatus) => void;
}

export function follow(url: string, o: FollowOptions): () => void {
  let last = o.after;
  let stopped = false;
  let controller: AbortController | undefined;
  let attempt = 0;

  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      o.onStatus?.(attempt === 0 ? 'connecting' : 'reconnecting');
      let ended = false;
      try {
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        const token = getToken();
        if (token) headers.authorization = `Bearer ${token}`;
        if (last > 0) headers['last-event-id'] = String(last);
        const res = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
        if (res.status === 401 || res.status === 403 || res.status === 404) {
          o.onStatus?.('ended');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
        attempt = 0;
        o.onStatus?.('live');
        // Events that arrive together (a replay, a burst) are handed over together.
        let batch: { seq: number; data: string }[] = [];
        const parser = createParser({
          onEvent: (e) => {
            if (e.event === 'end') {
              ended = true;
              return;
            }
            const seq = Number(e.id);
            if (!Number.isFinite(seq) || seq <= last) return;
            last = seq;
            batch.push({ seq, data: e.data });
          },
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let since = performance.now();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          // A burst (a replay, events relayed in bulk) can be megabytes in one read: it is
          // handled in slices, giving the browser a frame between them, so a burst never
          // freezes the page.
          for (let i = 0; i < value.length; i += SLICE) {
            parser.feed(value.length > SLICE ? value.slice(i, i + SLICE) : value);
            if (batch.length) {
              const out = batch;
              batch = [];
              o.onEvents(out);
            }
            if (performance.now() - since > BUDGET_MS) {
              await nextFrame();
              since = performance.now();
            }
          }
        }
      } catch (err) {
        if (stopped) return;
        void err;
      }
      if (ended) {
        o.onStatus?.('ended');
        return;
      }
      if (stopped) return;
      // Dropped: back off a little, then resume from the last seq seen.
      attempt++;
      o.onStatus?.('reconnecting');
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** (attempt - 1), 8000)));
    }
  };
  void run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

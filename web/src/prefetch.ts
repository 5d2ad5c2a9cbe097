// Answers /prefetch.js asked for before this bundle loaded (see there): each is handed
// over once, and any failure is retried the ordinary way, through api().
import { api } from './api.ts';

declare global {
  interface Window {
    __berthPrefetch?: Record<string, Promise<Response> | undefined>;
  }
}

/** GET `path`, from the request made at startup when there is one. */
export function getFirst<T>(path: string, signal?: AbortSignal): Promise<T> {
  const started = window.__berthPrefetch?.[path];
  if (!started) return api<T>('GET', path, undefined, signal);
  window.__berthPrefetch![path] = undefined;
  const again = () => api<T>('GET', path, undefined, signal);
  return started.then((res) => (res.ok ? (res.json() as Promise<T>) : again()), again);
}

// Trace spans for code deep in the call tree (the task pipeline, forge calls), without
// passing a tracer down: the span a piece of work runs under travels with its async
// context. Nothing here knows OpenTelemetry; the server's tracing sets the context when
// traces are on. When they are off no context is ever set, and each call below is one
// AsyncLocalStorage lookup that finds nothing.
import { AsyncLocalStorage } from 'node:async_hooks';

export type SpanAttributes = Record<string, string | number | boolean>;

/** A span that work can run under. */
export interface OpenSpan {
  /** Starts a span under this one (or under its current step, see step()). */
  child(name: string, attributes?: SpanAttributes): OpenSpan;
  setAttributes(attributes: SpanAttributes): void;
  /** Ends it; an error marks it failed. Idempotent. */
  end(error?: unknown): void;
  /** Work that moves through steps (a task): ends the last step's span and starts this one's. */
  step?(name: string): void;
}

const current = new AsyncLocalStorage<OpenSpan>();

/** Runs fn with `span` as the current span: spans started inside are under it. */
export function runInSpan<T>(span: OpenSpan, fn: () => T): T {
  return current.run(span, fn);
}

/** Runs fn in a span `name` under the current one; without a current span, just runs fn. */
export async function inSpan<T>(name: string, attributes: SpanAttributes, fn: () => Promise<T>): Promise<T> {
  const parent = current.getStore();
  if (!parent) return fn();
  const span = parent.child(name, attributes);
  try {
    const value = await current.run(span, fn);
    span.end();
    return value;
  } catch (err) {
    span.end(err);
    throw err;
  }
}

/** Starts a span under the current one and returns its end; undefined without a current span. */
export function startSpan(name: string, attributes: SpanAttributes = {}): OpenSpan | undefined {
  return current.getStore()?.child(name, attributes);
}

/** The current work moved on to step `name` (a task's pipeline step). */
export function markStep(name: string): void {
  current.getStore()?.step?.(name);
}

/** The span the current work runs under, if any. */
export function currentSpan(): OpenSpan | undefined {
  return current.getStore();
}

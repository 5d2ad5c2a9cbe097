// OpenTelemetry traces, loaded only when an OTLP endpoint is set: with traces off none of
// these packages is imported. The tracer provider is this control plane's own, never the
// process-wide one (tests run several control planes in one process), and spans reach
// code deep in the call tree through src/shared/spans.ts rather than a global context.
import type { Span, Tracer } from '@opentelemetry/api';
import type { OpenSpan, SpanAttributes } from '../../shared/spans.ts';
import { BerthError } from '../../shared/errors.ts';

export interface Tracing {
  /** A span that starts a trace of its own (an API request), or continues `parent`'s (a task created by a request). */
  root(name: string, attributes: SpanAttributes, opts?: { parent?: OpenSpan | undefined; steps?: boolean; inherited?: SpanAttributes }): OpenSpan;
  /** Sends what is buffered. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export async function startTracing(o: { endpoint: string; version: string; serviceName?: string | undefined }): Promise<Tracing> {
  const [api, sdk, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  // OTLP/HTTP with JSON bodies, at the signal path under the base endpoint (the spec's rule for OTEL_EXPORTER_OTLP_ENDPOINT).
  const exporter = new OTLPTraceExporter({ url: `${o.endpoint}/v1/traces` });
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ 'service.name': o.serviceName || 'berth', 'service.version': o.version }),
    spanProcessors: [new sdk.BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 })],
  });
  const tracer: Tracer = provider.getTracer('berth', o.version);

  class OtelSpan implements OpenSpan {
    readonly span: Span;
    readonly #inherited: SpanAttributes;
    readonly #steps: boolean;
    #step: OtelSpan | undefined;
    #ended = false;

    constructor(span: Span, inherited: SpanAttributes, steps: boolean) {
      this.span = span;
      this.#inherited = inherited;
      this.#steps = steps;
    }

    child(name: string, attributes: SpanAttributes = {}): OpenSpan {
      if (this.#step && !this.#step.#ended) return this.#step.child(name, attributes);
      return start(name, { ...this.#inherited, ...attributes }, this, this.#inherited, false);
    }

    setAttributes(attributes: SpanAttributes): void {
      this.span.setAttributes(attributes);
    }

    step(name: string): void {
      if (!this.#steps) return;
      this.#step?.end();
      this.#step = start(`task.step ${name}`, { ...this.#inherited, 'berth.step': name }, this, this.#inherited, false);
    }

    end(error?: unknown): void {
      if (this.#ended) return;
      this.#ended = true;
      this.#step?.end();
      // The kind of failure, never its message: messages can carry what a command printed.
      if (error !== undefined) this.span.setStatus({ code: api.SpanStatusCode.ERROR, message: error instanceof BerthError ? error.kind : error instanceof Error ? error.name : 'error' });
      this.span.end();
    }
  }

  const start = (name: string, attributes: SpanAttributes, parent: OtelSpan | undefined, inherited: SpanAttributes, steps: boolean) => {
    const context = parent ? api.trace.setSpan(api.ROOT_CONTEXT, parent.span) : api.ROOT_CONTEXT;
    return new OtelSpan(tracer.startSpan(name, { attributes }, context), inherited, steps);
  };

  return {
    root(name, attributes, opts = {}) {
      const inherited = opts.inherited ?? {};
      return start(name, { ...inherited, ...attributes }, opts.parent instanceof OtelSpan ? opts.parent : undefined, inherited, opts.steps ?? false);
    },
    flush: () => provider.forceFlush(),
    close: () => provider.shutdown(),
  };
}

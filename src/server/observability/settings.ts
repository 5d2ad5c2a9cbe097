import { invalid } from '../../shared/errors.ts';

/** How this control plane exposes metrics and traces; read once at start. */
export interface ObservabilitySettings {
  /** `Authorization: Bearer` value that /metrics on the main port asks for; without it (and without `listen`), /metrics is a 404. */
  metricsToken: string | undefined;
  /** A separate listener (host:port) that serves /metrics without a token. */
  metricsListen: { host: string; port: number } | undefined;
  /** Base URL of an OTLP/HTTP collector; traces are off without it. */
  otlpEndpoint: string | undefined;
}

export interface ObservabilityOptions {
  metricsToken?: string | undefined;
  metricsListen?: string | undefined;
  otlpEndpoint?: string | undefined;
}

/** The settings from startBerth's options, else the environment; a bad value stops the start with its name. */
export function observabilitySettingsFrom(opts: ObservabilityOptions, env: NodeJS.ProcessEnv): ObservabilitySettings {
  const token = opts.metricsToken ?? env.BERTH_METRICS_TOKEN;
  if (token !== undefined && token !== '' && (token.length < 16 || /[\s\0-\x1f]/.test(token))) {
    throw invalid('BERTH_METRICS_TOKEN must be at least 16 characters without spaces or control characters (e.g. `openssl rand -hex 24`)');
  }
  const listen = opts.metricsListen ?? env.BERTH_METRICS_LISTEN;
  const endpoint = opts.otlpEndpoint ?? env.BERTH_OTEL_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return { metricsToken: token || undefined, metricsListen: listen?.trim() ? hostPort(listen.trim()) : undefined, otlpEndpoint: endpoint?.trim() ? otlpUrl(endpoint.trim()) : undefined };
}

function hostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`BERTH_METRICS_LISTEN must be host:port (e.g. 127.0.0.1:9464 or [::1]:9464), not ${JSON.stringify(value)}`);
  }
  return { host: m[1] ?? m[2]!, port };
}

function otlpUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`OTEL_EXPORTER_OTLP_ENDPOINT (or BERTH_OTEL_ENDPOINT) must be an http(s) URL such as http://collector:4318, not ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`OTEL_EXPORTER_OTLP_ENDPOINT (or BERTH_OTEL_ENDPOINT) must be http(s), not ${url.protocol}`);
  return value.replace(/\/+$/, '');
}

// Why a model call failed, in words a user can act on. The adapters sort what their
// SDK threw into an SdkFailure; the loop decides from `failure` what to do next.

export type ModelFailure =
  /** The caller's AbortSignal fired. */
  | 'cancelled'
  /** The key was refused (401/403). */
  | 'auth'
  /** No answer: connection refused, DNS, timeout. */
  | 'unreachable'
  /** The API refused the request itself (400, 404 for an unknown model, 422). */
  | 'rejected'
  /** 5xx or 429 that outlasted the SDK's retries. */
  | 'server'
  /** An answer came but it is not a completion we can read; worth asking again. */
  | 'bad_response';

export class ModelError extends Error {
  readonly failure: ModelFailure;
  readonly status: number | null;

  constructor(failure: ModelFailure, message: string, status: number | null = null) {
    super(message);
    this.name = 'ModelError';
    this.failure = failure;
    this.status = status;
  }
}

export type SdkFailure =
  | { kind: 'abort' }
  | { kind: 'timeout' }
  | { kind: 'connection'; cause: string }
  | { kind: 'status'; status: number; message: string }
  | { kind: 'unreadable'; message: string };

export interface CallSite {
  /** e.g. "the Anthropic API at https://api.anthropic.com" */
  label: string;
  /** How many times the SDK tries a call (its retries + 1). */
  attempts: number;
  timeoutMs: number;
}

export function modelError(f: SdkFailure, at: CallSite): ModelError {
  const tries = at.attempts > 1 ? ` (${at.attempts} attempts)` : '';
  switch (f.kind) {
    case 'abort':
      return new ModelError('cancelled', 'the model call was cancelled');
    case 'timeout':
      return new ModelError('unreachable', `${at.label} did not answer within ${Math.round(at.timeoutMs / 1000)} s${tries}`);
    case 'connection':
      return new ModelError('unreachable', `could not reach ${at.label}${tries}: ${f.cause}`);
    case 'unreadable':
      return new ModelError('bad_response', `${at.label} sent a reply that is not a completion: ${f.message}`);
    case 'status': {
      const { status, message } = f;
      if (status === 401 || status === 403) return new ModelError('auth', `${at.label} refused the API key (${message}); check the key and that it may use this model`, status);
      if (status === 429 || status >= 500) return new ModelError('server', `${at.label} kept failing${tries}: ${message}`, status);
      if (status === 404) return new ModelError('rejected', `${at.label} answered 404 (${message}); check the model name and the base URL`, status);
      return new ModelError('rejected', `${at.label} rejected the request: ${message}`, status);
    }
  }
}

/** The innermost message of an error chain: fetch hides ECONNREFUSED two causes deep. */
export function rootCause(err: unknown): string {
  let e: unknown = err;
  for (let i = 0; i < 5 && e instanceof Error && e.cause instanceof Error; i++) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

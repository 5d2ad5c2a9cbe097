// Per-task gateway tokens: what a task's agent presents instead of a provider key.
// Each is 32 random bytes, kept only as its SHA-256 hash, so a lookup compares digests
// and never the secret itself, and a dump of this map reveals no usable token.
import { createHash, randomBytes } from 'node:crypto';
import type { Usage } from '../../shared/tasks.ts';
import type { Provider, Upstreams } from './upstreams.ts';

/** One model call made through the gateway, as the task's owner hears of it. */
export interface GatewayCall {
  taskId: string;
  provider: Provider;
  /** The model the provider says answered; else the one asked for; '' if neither is known. */
  model: string;
  /** inputTokens counts every input token, prompt-cache reads and writes included. */
  usage: Usage;
  /** Of usage.inputTokens: read from and written to the provider's prompt cache. */
  cache: { readTokens: number; writeTokens: number };
  stream: boolean;
  /** The provider's HTTP status; 502 when it could not be reached, 499 when the agent hung up before it answered. */
  status: number;
  durationMs: number;
}

export interface IssueOptions {
  taskId: string;
  /** Input + output tokens the task may use through the gateway; null: no limit. */
  maxTokens: number | null;
  /** Every forwarded model call, once it has ended. Should not throw; if it does, it is logged. */
  onCall: (call: GatewayCall) => void;
  /**
   * The task's own upstreams (its org's or project's model settings), used instead of the
   * gateway's for the providers they name; the others stay the gateway's (the instance's).
   */
  upstreams?: Upstreams | undefined;
}

export interface IssuedToken {
  /** The bearer token (or x-api-key) for the task's agent. */
  token: string;
  /** What the task has used so far. */
  usage(): Usage;
  /** The token stops working at once; calls already under way finish. Idempotent. */
  revoke(): void;
}

export interface Grant {
  readonly taskId: string;
  readonly maxTokens: number | null;
  readonly onCall: (call: GatewayCall) => void;
  readonly used: Usage;
  readonly upstreams: Upstreams | undefined;
}

const TOKEN_PREFIX = 'berth-llm-';

const digest = (token: string) => createHash('sha256').update(token).digest('hex');

export class Grants {
  readonly #byHash = new Map<string, Grant>();

  issue(opts: IssueOptions): IssuedToken {
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const hash = digest(token);
    const grant: Grant = { taskId: opts.taskId, maxTokens: opts.maxTokens, onCall: opts.onCall, used: { inputTokens: 0, outputTokens: 0, costUsd: 0 }, upstreams: opts.upstreams };
    this.#byHash.set(hash, grant);
    return {
      token,
      usage: () => ({ ...grant.used }),
      revoke: () => {
        if (this.#byHash.get(hash) === grant) this.#byHash.delete(hash);
      },
    };
  }

  /** The live grant a presented token belongs to. */
  find(token: string | undefined): Grant | undefined {
    if (!token?.startsWith(TOKEN_PREFIX) || token.length > 200) return undefined;
    return this.#byHash.get(digest(token));
  }

  /** Tokens issued and not yet revoked. */
  get outstanding(): number {
    return this.#byHash.size;
  }

  revokeAll(): void {
    this.#byHash.clear();
  }
}

/** The task has used all the tokens it may: refuse its next call. */
export function budgetSpent(grant: Grant): boolean {
  return grant.maxTokens !== null && grant.used.inputTokens + grant.used.outputTokens >= grant.maxTokens;
}

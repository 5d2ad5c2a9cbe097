import { GATEWAY_SOCKET_NAME, gatewayEnv, relayCommand, relayReady, type LlmGateway, type Upstreams } from '../../runner/index.ts';
import type { TaskEventData } from '../../shared/tasks.ts';
import type { EnvironmentService } from '../environments/service.ts';
import { taskScope } from './sandbox.ts';

/**
 * What a command agent (an agent CLI inside the environment) gets to reach models: the
 * variables that point OpenAI and Anthropic clients at the runner's LLM gateway with a
 * token for this task alone, revoked by close().
 */
export interface CommandAgentGateway {
  open(o: {
    orgId: string;
    taskId: string;
    environmentId: string;
    maxTokens: number | null;
    /** The task's org's or project's model API, for its provider: used instead of the instance's. */
    upstreams?: Upstreams | undefined;
    onCall: (e: Extract<TaskEventData, { type: 'model' }>) => void;
  }): Promise<{ env: Record<string, string>; close(): Promise<void> }>;
}

/**
 * The gateway listens on a unix socket in the environment's agent directory, and a relay
 * inside (the agent binary in relay mode) turns it into a loopback port: the environment
 * has no network, and the real key stays in this process.
 */
export function sandboxGateway(o: { gateway: LlmGateway; environments: EnvironmentService }): CommandAgentGateway {
  return {
    async open({ orgId, taskId, environmentId, maxTokens, upstreams, onCall }) {
      const issued = o.gateway.issue({
        taskId,
        maxTokens,
        upstreams,
        onCall: (c) => onCall({ type: 'model', provider: c.provider, model: c.model, usage: c.usage, durationMs: Math.round(c.durationMs), text: null, toolCalls: [], via: 'gateway' }),
      });
      const closeSocket = await (await o.environments.runnerOf(environmentId)).serveSocket(environmentId, GATEWAY_SOCKET_NAME, (c) => o.gateway.accept(c));
      try {
        const relay = await o.environments.exec(taskScope(orgId, taskId), environmentId, { cmd: relayCommand() }, { redact: false });
        relay.stdin.end();
        await relayReady(relay);
        return {
          env: gatewayEnv(issued.token),
          async close() {
            issued.revoke();
            await relay.signal('SIGTERM').catch(() => {});
            await closeSocket();
          },
        };
      } catch (err) {
        issued.revoke();
        await closeSocket();
        throw err;
      }
    },
  };
}

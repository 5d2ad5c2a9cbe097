import type { TaskEventData } from '../../shared/tasks.ts';

/**
 * What a command agent (an agent CLI inside the environment) gets to reach models: the
 * variables that point OpenAI and Anthropic clients at the runner's LLM gateway with a
 * token for this task alone, revoked by close().
 */
export interface CommandAgentGateway {
  open(o: {
    taskId: string;
    environmentId: string;
    maxTokens: number | null;
    onCall: (e: Extract<TaskEventData, { type: 'model' }>) => void;
  }): Promise<{ env: Record<string, string>; close(): Promise<void> }>;
}

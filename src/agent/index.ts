// The built-in agent: a tool-calling loop over the OpenAI Chat Completions or the
// Anthropic Messages protocol, acting on an environment through a Workspace.
export { BuiltinAgent, type AgentBudget, type AgentOutcome, type BuiltinAgentOptions } from './loop.ts';
export { HostWorkspace, TIMEOUT_EXIT_CODE, type ExecOptions, type ExecResult, type Workspace } from './workspace.ts';
export {
  AnthropicModel,
  defaultModel,
  instanceProvider,
  ModelError,
  modelClientFor,
  modelClientFromEnv,
  OpenAIModel,
  type AssistantTurn,
  type Completion,
  type CompletionRequest,
  type Message,
  type ModelClient,
  type ModelEndpoint,
  type ModelFailure,
  type ModelOptions,
  type Provider,
  type ToolCall,
  type ToolResult,
  type ToolSpec,
} from './models/index.ts';
export { costUsd, parsePrice, priceOf, type Price } from './pricing.ts';
export { TOOLS, type Tool } from './tools/index.ts';

// The agent's tools, and the one place a model's tool call is checked before it runs:
// anything malformed comes back as an error for the model to read, never a throw.
import { z } from 'zod';
import { BerthError } from '../../shared/errors.ts';
import type { ToolCall, ToolSpec } from '../models/types.ts';
import { runCommand } from './command.ts';
import { editFile, readFile, writeFile } from './files.ts';
import { listFiles, searchFiles } from './search.ts';
import { fail, ok, type Tool, type ToolContext, type ToolOutcome } from './tool.ts';

export type { Tool, ToolContext, ToolOutcome } from './tool.ts';

const finishSchema = z.object({
  summary: z.string().min(1).describe('What you changed and why, and anything left undone; this becomes the pull request description.'),
});

export const finish: Tool<typeof finishSchema> = {
  name: 'finish',
  description: 'End the work: call this once the change is made and the checks pass, or when you cannot go further.',
  schema: finishSchema,
  async run({ summary }) {
    return { ...ok('finished'), summary };
  },
};

export const TOOLS: readonly Tool[] = [runCommand, readFile, writeFile, editFile, listFiles, searchFiles, finish];

export function toolSpecs(tools: readonly Tool[] = TOOLS): ToolSpec[] {
  return tools.map((t) => ({ name: t.name, description: t.description, parameters: jsonSchema(t.schema) }));
}

export interface ToolCallOutcome extends ToolOutcome {
  /** The arguments as parsed, or the raw text when it was not JSON. */
  args: unknown;
}

/**
 * Parses, validates and runs one tool call. Errors of the model's making come back as
 * an error outcome; an exception means the workspace itself failed.
 */
export async function callTool(tools: readonly Tool[], call: ToolCall, ctx: ToolContext): Promise<ToolCallOutcome> {
  const tool = tools.find((t) => t.name === call.name);
  if (!tool) return { ...fail(`there is no tool named ${JSON.stringify(call.name)}; the tools are ${tools.map((t) => t.name).join(', ')}`), args: call.arguments };
  let args: unknown;
  try {
    // Some servers send "" for a call without arguments.
    args = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
  } catch (err) {
    const excerpt = call.arguments.length > 200 ? `${call.arguments.slice(0, 200)}…` : call.arguments;
    return { ...fail(`the arguments of ${tool.name} are not valid JSON (${(err as Error).message}): ${excerpt}\nCall it again with one JSON object.`), args: call.arguments };
  }
  const parsed = tool.schema.safeParse(args);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'arguments'}: ${i.message}`).join('; ');
    return { ...fail(`invalid arguments for ${tool.name}: ${problems}`), args };
  }
  try {
    return { ...(await tool.run(parsed.data, ctx)), args };
  } catch (err) {
    // Input the environment refused before running anything (a command the audit log could
    // not record, say) is the model's to fix, not a broken workspace.
    if (err instanceof BerthError && err.kind === 'invalid') return { ...fail(`${tool.name} was refused: ${err.message}`), args };
    throw err;
  }
}

/** JSON Schema for a model: without the noise zod adds for plain integers and the $schema line. */
function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const tidy = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(tidy);
    if (!node || typeof node !== 'object') return node;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === '$schema') continue;
      if ((k === 'minimum' || k === 'maximum') && Math.abs(v as number) === Number.MAX_SAFE_INTEGER) continue;
      out[k] = tidy(v);
    }
    return out;
  };
  return tidy(z.toJSONSchema(schema, { io: 'input' })) as Record<string, unknown>;
}

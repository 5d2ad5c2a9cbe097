// The model settings API's shapes, declared once for the server, /openapi.json, the CLI and
// the web UI. An org and each of its projects may name the model their tasks use instead of
// the instance default (berth up's OPENAI_* / ANTHROPIC_* / BERTH_MODEL). The key is never a
// value here: only the NAME of the secret that holds it, which Berth itself reads on the host.
import { z } from 'zod';
import { OrgRef } from './api.ts';

export const MODEL_PROVIDERS = ['openai', 'anthropic'] as const;
export type ModelProvider = (typeof MODEL_PROVIDERS)[number];

/** Whose settings give a task its provider, base URL and key. */
export const MODEL_SCOPES = ['project', 'org', 'instance'] as const;
export type ModelScope = (typeof MODEL_SCOPES)[number];

/** Who named a task's model: the task itself (--model), its project, the org, the instance. */
export const MODEL_SOURCES = ['task', 'project', 'org', 'instance'] as const;
export type ModelSource = (typeof MODEL_SOURCES)[number];

/** Secret names double as environment variable names (secrets/service.ts SECRET_NAME). */
const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export const ModelSettingsBody = z.strictObject({
  provider: z.enum(MODEL_PROVIDERS).describe('the protocol the model API speaks: openai (OpenAI-compatible: vLLM, Ollama, LiteLLM…) or anthropic'),
  baseUrl: z
    .string()
    .max(2048)
    .refine((s) => {
      try {
        return ['http:', 'https:'].includes(new URL(s).protocol);
      } catch {
        return false;
      }
    }, 'expected an http(s) URL such as https://api.openai.com/v1')
    .describe("the API's base URL as its SDK takes it: OpenAI's with /v1, Anthropic's without"),
  keySecret: z.string().regex(SECRET_NAME, 'a secret name: letters, digits and _').describe('the name of the org (or project) secret holding the API key: used by Berth on the host, never given to environments'),
  model: z.string().trim().min(1).max(200).describe('the model the built-in agent uses, e.g. gpt-4.1 or claude-sonnet-4-5'),
});
export type ModelSettingsBody = z.infer<typeof ModelSettingsBody>;

export const ModelSettings = z.object({
  scope: z.enum(['org', 'project']),
  project: z.string().nullable().describe('the project, for a project\'s settings'),
  provider: z.enum(MODEL_PROVIDERS),
  baseUrl: z.string(),
  keySecret: z.string().describe('the NAME of the secret holding the key; the key itself is never returned'),
  model: z.string(),
  updatedAt: z.string(),
  updatedBy: z.string(),
});
export type ModelSettings = z.infer<typeof ModelSettings>;

/** What GET answers: the scope's own settings (null when it has none), and what its tasks use. */
export const ModelSettingsView = z.object({
  own: ModelSettings.nullable(),
  effective: z.object({
    scope: z.enum(MODEL_SCOPES).describe("whose settings the scope's tasks use"),
    provider: z.enum(MODEL_PROVIDERS).nullable().describe('null: the instance default, whose provider follows the model name and the keys set'),
    model: z.string().nullable().describe("null: the instance has no default model (BERTH_MODEL)"),
  }),
});
export type ModelSettingsView = z.infer<typeof ModelSettingsView>;

export const ProjectModelRef = OrgRef.extend({ name: z.string().min(1).max(100).describe('project name or id') });

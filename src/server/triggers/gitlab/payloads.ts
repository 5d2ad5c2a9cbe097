// What Berth reads of GitLab's webhook payloads (Issue Hook, Note Hook, their confidential
// twins, Push Hook), as GitLab documents them. Anyone who knows the URL can post here, so
// every field is checked and bounded; what is not read is dropped (zod strips unknown keys),
// so only this is kept with the delivery. Free text (a note) is cut, never refused: GitLab
// disables a webhook that keeps failing, and a long note is no reason to.
import { z } from 'zod';

/** The longest note read; an instruction is the first lines of one. */
const MAX_NOTE = 16 * 1024;
const MAX_LIST = 500;

const id = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const text = (max: number) => z.string().transform((s) => s.slice(0, max));
const url = z.string().max(2048);

const User = z.object({ id, username: z.string().min(1).max(255) });
const Project = z.object({
  id,
  path_with_namespace: z.string().min(1).max(2048),
  web_url: url,
  git_http_url: url.nullish(),
  git_ssh_url: url.nullish(),
});
const Label = z.object({ title: z.string().max(255) });
const Named = z.object({ username: z.string().max(255) });

export const IssueHook = z.object({
  object_kind: z.literal('issue'),
  user: User,
  project: Project,
  object_attributes: z.object({
    iid: id,
    title: text(1024),
    action: z.string().max(50).optional(),
  }),
  labels: z.array(Label).max(MAX_LIST).nullish(),
  assignees: z.array(Named).max(MAX_LIST).nullish(),
  changes: z
    .object({
      labels: z.object({ previous: z.array(Label).max(MAX_LIST).nullish(), current: z.array(Label).max(MAX_LIST).nullish() }).optional(),
      assignees: z.object({ previous: z.array(Named).max(MAX_LIST).nullish(), current: z.array(Named).max(MAX_LIST).nullish() }).optional(),
    })
    .nullish(),
});
export type IssueHook = z.infer<typeof IssueHook>;

export const NoteHook = z.object({
  object_kind: z.literal('note'),
  user: User,
  project: Project,
  object_attributes: z.object({
    id,
    note: text(MAX_NOTE),
    noteable_type: z.string().max(50),
    system: z.boolean().nullish(),
    /** `create`, or `update` for an edit (newer GitLabs); older ones send none for a new note. */
    action: z.string().max(50).nullish(),
    url: url.nullish(),
  }),
  issue: z.object({ iid: id, title: text(1024) }).nullish(),
  merge_request: z.object({ iid: id, title: text(1024), source_branch: z.string().max(1024) }).nullish(),
});
export type NoteHook = z.infer<typeof NoteHook>;

/** A commit id; all zeros for `before` of a new branch and `after` of a deleted one. SHA-256 projects: 64. */
const sha = z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/, 'a commit id');

/** A push to a branch (tags are Tag Push Hooks): queues the project's prebuild (../push.ts); the commits are not read. */
export const PushHook = z.object({
  object_kind: z.literal('push'),
  ref: z.string().regex(/^refs\/heads\/\S/, 'a branch (refs/heads/…)').max(1024),
  before: sha,
  after: sha,
  user_username: z.string().max(255).nullish(),
  project: Project.extend({ default_branch: z.string().max(1024).nullish() }),
});
export type PushHook = z.infer<typeof PushHook>;

export const GitLabHook = z.discriminatedUnion('object_kind', [IssueHook, NoteHook, PushHook]);
export type GitLabHook = z.infer<typeof GitLabHook>;

/** The object kinds read here; any other (tag push, pipeline…) is answered and left alone. */
export const HANDLED_KINDS: ReadonlySet<string> = new Set(['issue', 'note', 'push']);

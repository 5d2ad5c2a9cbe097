// The file browser's shapes (the web UI's environment page): a folder's entries, listed
// through the environment's audited exec path, and one file downloaded as itself.
import { z } from 'zod';

export const FileListQuery = z.strictObject({
  path: z.string().startsWith('/', 'must be an absolute path').max(4096).default('/workspace').describe('the folder to list'),
});

export const FileEntry = z.object({
  name: z.string(),
  type: z.enum(['file', 'folder', 'link', 'other']),
  size: z.number().describe('bytes (of a link: of the link itself)'),
  modifiedAt: z.string().nullable(),
});
export type FileEntry = z.infer<typeof FileEntry>;

export const FileList = z.object({
  path: z.string(),
  entries: z.array(FileEntry).describe('folders first, then by name'),
  truncated: z.boolean().describe('the folder holds more entries than one listing shows (MAX_LISTED)'),
});
export type FileList = z.infer<typeof FileList>;

/** Entries one listing shows at most. */
export const MAX_LISTED = 2000;

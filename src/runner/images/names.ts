// What counts as an image name, and how a name is derived when the user gives none.
import { basename } from 'node:path';
import { invalid } from '../../shared/errors.ts';

// Docker's reference grammar, simplified: [host[:port]/]path[:tag][@digest], lower case but the tag.
const REFERENCE = /^[a-z0-9][a-z0-9._-]*(?::\d+)?(?:\/[a-z0-9][a-z0-9._-]*)*(?::\w[\w.-]*)?(?:@sha256:[a-f0-9]{64})?$/;
const MAX_NAME = 255;

export const isImageName = (name: string) => name.length <= MAX_NAME && REFERENCE.test(name);

export function checkImageName(name: string): void {
  if (!isImageName(name)) {
    throw invalid(`'${name}' is not a valid image name: use lower-case letters, digits, . _ - and /, then an optional :tag`, 'name');
  }
}

/**
 * Whether `ref` names a registry image: it must start with a registry host (with a dot or
 * a port, or `localhost`), like `docker.io/library/alpine:3.20`. Short names like `alpine`
 * are never pulled: which registry they mean is a policy question, not a guess to make.
 */
export function isRegistryReference(ref: string): boolean {
  const [host, ...path] = ref.split('/');
  return isImageName(ref) && path.length > 0 && (host!.includes('.') || host!.includes(':') || host === 'localhost');
}

/** Whether the user evidently meant a file, so "not found" should talk about files. */
export const looksLikePath = (ref: string) => /^(\/|\.\.?\/|~)/.test(ref) || /\.(tar|tgz|gz|zst|oci)$/.test(ref);

/**
 * A name for an imported image the user did not name: the archive's own reference when it
 * is a full one (`docker.io/library/alpine:3.20`, `test:latest`), else the file name with
 * the archive's bare tag (`alpine.tar` holding `latest` → `alpine:latest`).
 */
export function derivedName(tag: string | undefined, path: string): string {
  if (tag && isImageName(tag) && /[:/]/.test(tag)) return tag;
  const base =
    basename(path)
      .toLowerCase()
      .replace(/(\.(tar|tgz|gz|zst|oci))+$/, '')
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[^a-z0-9]+/, '') || 'image';
  const tagged = tag && /^\w[\w.-]*$/.test(tag) ? `${base}:${tag}` : base;
  return isImageName(tagged) ? tagged : 'image';
}

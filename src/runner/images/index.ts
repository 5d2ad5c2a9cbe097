// Public surface of the image store. See store.ts for the implementation.
export type { ImageRecord, ImageProgress, ImageProgressEvent } from './store.ts';
export { ImageStore, DEFAULT_IMAGE } from './store.ts';
export { isRegistryReference } from './names.ts';
export { parseMirrors, type RegistryMirrors } from './mirrors.ts';
export type { RegistryCredential } from './registry.ts';
export { ImageBuilder, type BuildSpec, type BuildRequest, type BuildResult } from './build.ts';

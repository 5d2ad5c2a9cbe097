// The image store's vocabulary, shared by its modules. The public surface is re-exported
// from store.ts and index.ts.
import type { Digest } from './blobs.ts';

/** Where an image came from. */
export type ImageSource = 'debian' | 'oci-layout' | 'docker-archive' | 'registry';

/** The parts of an image's OCI config an environment needs to start a process like the image intends. */
export interface ImageConfig {
  /** `NAME=value` pairs, PATH among them. */
  env: string[];
  workingDir?: string;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

export interface ImageRecord {
  /** What users type: `default`, `test:latest`, `docker.io/library/alpine:3.20`. Several names may share one digest. */
  name: string;
  /** The org whose name this is (it pulled the image); absent for the instance's images, which every org sees. */
  org?: string;
  /**
   * The content address. For imported and pulled images: the digest of the image config
   * (its image id), the same whether the image came as an OCI layout, a docker-save
   * tarball or from a registry. For the default image: the digest of its build recipe.
   */
  digest: Digest;
  /** Absolute path of the unpacked tree, owners shifted by ID_BASE. Read-only: use it as an overlay lowerdir. */
  rootfs: string;
  /** Bytes in regular files, each hard-linked file counted once. */
  sizeBytes: number;
  /** When this store unpacked the image (ISO 8601). */
  createdAt: string;
  source: ImageSource;
  config: ImageConfig;
}

export type ImagePhase =
  | 'inspect' // reading manifests
  | 'extract' // unpacking an archive file into a scratch directory
  | 'pull' // skopeo copying from a registry
  | 'verify' // checking blob digests
  | 'unpack' // applying layers
  | 'bootstrap' // mmdebstrap building the default image
  | 'install' // adding Node.js and npm to the default image
  | 'wait' // another process is building the same image
  | 'done';

export interface ImageProgressEvent {
  phase: ImagePhase;
  message: string;
  /** 0..1 within the phase, when it is known. */
  fraction?: number;
  /** Bytes through so far in this step (the same message), and how many there are when that is known. */
  bytes?: { done: number; total?: number };
}

/** Drives the CLI's spinner. Called often; must not throw (errors are swallowed). */
export type ImageProgress = (event: ImageProgressEvent) => void;

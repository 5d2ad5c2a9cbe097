// The parts of the OCI image spec (and of docker's equivalents) the store reads, declared
// once as zod schemas: parsing an untrusted archive and typing it are the same step.
import { z } from 'zod';
import type { Compression, Digest } from './blobs.ts';

const digest = z
  .string()
  .regex(/^sha256:[a-f0-9]{64}$/, 'must be a sha256 digest (sha256: and 64 hex digits)')
  .transform((value) => value as Digest);

export const platformSchema = z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() });

export const descriptorSchema = z.object({
  mediaType: z.string(),
  digest,
  size: z.number().int().nonnegative(),
  platform: platformSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const indexSchema = z.object({ schemaVersion: z.literal(2), manifests: z.array(descriptorSchema) });
export const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
});

const strings = z.array(z.string()).nullish();
export const imageConfigSchema = z.object({
  os: z.string(),
  architecture: z.string(),
  config: z
    .object({
      Env: strings,
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
      Entrypoint: strings,
      Cmd: strings,
    })
    .nullish(),
  rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(digest) }),
});
export type ImageConfigFile = z.infer<typeof imageConfigSchema>;

/** `docker save` / `podman save` / skopeo docker-archive: manifest.json. */
export const dockerManifestSchema = z
  .array(z.object({ Config: z.string(), RepoTags: z.array(z.string()).nullish(), Layers: z.array(z.string()) }))
  .min(1, 'lists no images');

export const MEDIA_TYPES = {
  index: ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'],
  manifest: ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'],
} as const;

const LAYER_COMPRESSION: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

export const layerCompression = (mediaType: string): Compression | undefined => LAYER_COMPRESSION[mediaType];

/** The platform this runner can run, in OCI terms. */
export const HOST_PLATFORM = {
  os: 'linux',
  architecture: ({ x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[process.arch] ?? process.arch,
};

export const REF_NAME_ANNOTATIONS = ['io.containerd.image.name', 'org.opencontainers.image.ref.name'] as const;

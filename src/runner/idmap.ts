// Root inside an environment is this unprivileged range outside. Image files are
// shifted into the range once, when an image is unpacked, so every environment can
// share the read-only copy without idmapped mounts. The base sits far above the
// ranges /etc/subuid hands to users (100000+), so no host user owns these ids.
export const ID_BASE = 1_000_000_000;
export const ID_COUNT = 65_536;

export const toHostId = (containerId: number) => ID_BASE + containerId;

// What a runner can say about its host and itself, for its heartbeat: the backend, the
// cgroup layout, cores and memory, the network and disk setup, and what is wrong (a tool
// gone missing, the data directory's disk nearly full). Cheap enough to run every few seconds.
import { accessSync, constants, statfsSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import { formatSize } from '../shared/units.ts';
import { cgroupLayout, type CgroupLayout } from './cgroups.ts';
import type { EgressNetworkSummary } from './network/company.ts';
import type { CheckpointSupport } from './checkpoint.ts';
import type { SnapshotSupport } from './port.ts';

export interface HostProbe {
  backend: string;
  cgroups: CgroupLayout;
  cpus: number;
  memoryBytes: number;
  network: { egressProxy: boolean; nftables: boolean } & EgressNetworkSummary;
  diskQuota: boolean;
  dataDisk: { freeBytes: number; totalBytes: number };
  /** Whether it can pause environments (checkpoint.ts); absent where nothing was probed. */
  checkpoint?: CheckpointSupport | undefined;
  /** Whether it keeps snapshots (its btrfs state store, store.ts); absent where nothing was probed. */
  snapshots?: SnapshotSupport | undefined;
  /** Empty when the runner is healthy. */
  problems: string[];
}

export interface ProbeInput {
  /** The isolation backend's runtime binary (crun, runc, runsc). */
  backend: string;
  /** False for a runner that runs no OCI runtime (tests' fake): nothing to look for. */
  runtime?: boolean | undefined;
  /** Whether environments get a network through the egress proxy. */
  network: boolean;
  diskQuota: boolean;
  dataDir: string;
  /** Less free space than this on the data directory's file system makes the runner degraded. */
  minFreeDiskBytes: number;
  /** Trusted networks and the upstream proxy, as shown (no credentials). */
  egressNetwork?: EgressNetworkSummary | undefined;
  /** Whether it can pause environments, probed once at start (pauseSupport). */
  checkpoint?: CheckpointSupport | undefined;
  /** Whether it keeps snapshots (Runner.snapshotSupport). */
  snapshots?: SnapshotSupport | undefined;
}

const NO_EGRESS_NETWORK: EgressNetworkSummary = { trustedNetworks: [], upstreamProxy: null, noProxy: [] };

// Root's tools live in the sbin directories, which a service's PATH does not always name.
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Whether an executable of this name is on PATH (or in an sbin directory). */
export function installed(binary: string, path = process.env.PATH ?? ''): boolean {
  for (const dir of new Set([...path.split(delimiter).filter(Boolean), ...SBIN])) {
    try {
      accessSync(join(dir, binary), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

export function probeHost(input: ProbeInput): HostProbe {
  const problems: string[] = [];
  if (input.runtime !== false && !installed(input.backend)) problems.push(`the OCI runtime ${input.backend} is missing: environments cannot start (apt-get install ${input.backend})`);
  const nftables = installed('nft');
  if (input.network && !nftables) problems.push('nftables (nft) is missing: environments with a network cannot start (apt-get install nftables)');
  let dataDisk = { freeBytes: 0, totalBytes: 0 };
  try {
    const fs = statfsSync(input.dataDir);
    dataDisk = { freeBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize };
    if (dataDisk.freeBytes < input.minFreeDiskBytes) {
      problems.push(`disk space is low on the data directory: ${formatSize(dataDisk.freeBytes)} free of ${formatSize(dataDisk.totalBytes)}, below ${formatSize(input.minFreeDiskBytes)} (BERTH_MIN_FREE_DISK)`);
    }
  } catch (err) {
    problems.push(`the data directory cannot be read: ${(err as Error).message}`);
  }
  return {
    backend: input.backend,
    cgroups: cgroupLayout(),
    cpus: availableParallelism(),
    memoryBytes: totalmem(),
    network: { egressProxy: input.network, nftables, ...(input.egressNetwork ?? NO_EGRESS_NETWORK) },
    diskQuota: input.diskQuota,
    dataDisk,
    ...(input.checkpoint && { checkpoint: input.checkpoint }),
    ...(input.snapshots && { snapshots: input.snapshots }),
    problems,
  };
}

import type { EgressPolicy } from './types.ts';

/** Nothing allowed: what an environment gets when no policy says otherwise. */
export const DENY_ALL: EgressPolicy = Object.freeze({
  allowDomains: [],
  presets: [],
  allowPorts: null,
  allowMethods: null,
  maxConnections: 0,
  credentials: [],
  scope: 'default',
}) as EgressPolicy;

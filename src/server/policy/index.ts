export { PolicyService, checkCreateAllowList, oneOffAllowList, storeEnvironmentAllowList, type PolicyTarget, type PolicyPatch, type PolicyView, type EffectivePolicy } from './service.ts';
export { checkDomain, checkDomains, domainMatches, HTTP_METHODS } from './domains.ts';
export { PRESETS, PRESET_NAMES } from './presets.ts';
export { MIRROR_ECOSYSTEMS } from './mirrors.ts';
export { DEFAULT_MAX_CONNECTIONS, resolvePolicy } from './resolve.ts';
export type { EgressPolicy, NetworkEvent, NetworkEventSink, PolicySource } from './types.ts';

// Sign-in through an OpenID Connect provider, and what its groups grant in Berth.
export {
  DEFAULT_GROUPS_CLAIM,
  DEFAULT_SCOPES,
  OidcSignIn,
  OidcSignInError,
  type OidcFailure,
  type OidcIdentity,
  type OidcSignInOptions,
  type PendingSignIn,
} from './sign-in.ts';
export { CliCodes, type CliCode } from './cli-codes.ts';
export { PendingSignIns, type PendingSignInsOptions } from './pending.ts';
export { higherRole, mapGroups, ROLE_ORDER, roleRank, type GrantedMembership, type GroupRule } from './groups.ts';
export { OIDC_ENV, oidcConfigFromEnv, parseGroupRules, type OidcConfig } from './config.ts';

// The web UI's own pages, declared once: the UI's router draws them, and the control plane
// answers them with the UI's index.html. Any other path (and anything under /api/) is not
// the UI's, so it answers a JSON 404 rather than a page a script or a probe would take for
// a success (`/metrics`, `/healthz`, a typo in an API path).

/** Every page the UI draws, as patterns over the path (no query, no trailing slash but `/`). */
export const WEB_PAGES: readonly RegExp[] = [
  /^\/$/,
  /^\/sign-in$/,
  /^\/auth\/oidc\/callback$/,
  /^\/invite$/,
  /^\/tasks$/,
  /^\/tasks\/new$/,
  /^\/tasks\/task_[0-9a-z]+$/,
  /^\/environments$/,
  /^\/environments\/[A-Za-z0-9_-]{1,100}$/,
  /^\/snapshots$/,
  /^\/campaigns$/,
  /^\/campaigns\/[A-Za-z0-9._-]{1,100}$/,
  /^\/audit$/,
  /^\/settings$/,
];

/** The path is one of the UI's pages. */
export function isWebPage(path: string): boolean {
  return WEB_PAGES.some((p) => p.test(path));
}

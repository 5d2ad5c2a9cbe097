// Campaigns: one change across many repositories (service.ts: what people ask; scheduler.ts: the tasks).
export { CampaignService, campaignBranch } from './service.ts';
export { CampaignScheduler, failureOf } from './scheduler.ts';
export { parseRepoList } from './targets.ts';
export { CampaignForge } from './forge.ts';

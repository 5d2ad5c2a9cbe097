import { readFileSync } from 'node:fs';

/** What the CLI needs to reach a control plane; `berth up` writes it 0600 into the data dir. */
export interface ClientConfig {
  url: string;
  token: string;
  /** The org commands act in unless --org or BERTH_ORG says otherwise. */
  org?: string;
}

export const CLIENT_CONFIG_FILE = 'client.json';

export const VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

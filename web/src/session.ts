import { createContext, useContext } from 'react';
import type { Me, Org } from './api.ts';

export interface Session {
  me: Me;
  org: Org;
  setOrg: (name: string) => void;
  signOut: () => void;
  /** Says something to screen readers (and shows it briefly). */
  announce: (message: string) => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSession outside the signed-in app');
  return s;
}

// Every kind of trigger this control plane serves, in one list (index.ts makes them).
import type { TriggerSourceFactory } from './index.ts';

export const TRIGGER_SOURCES: TriggerSourceFactory[] = [];

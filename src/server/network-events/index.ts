export { NetworkEventRecorder } from './recorder.ts';

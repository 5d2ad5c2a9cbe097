// Freezing an environment while its files are copied is the runner's (runner/freeze.ts); backups use it from there.
export { pauseEnvironment, runsHere, type Paused } from '../../runner/index.ts';
